{#- Undo the ocfs2 formula on this host: unmount, drop the fstab entry, stop o2cb, remove the
    settings. The volume's data is never touched. #}
{%- from "xenha/map.jinja" import cluster with context %}
{%- from "ocfs2/map.jinja" import ocfs2 with context %}

ocfs2-clean-mount-unmounted:
  mount.unmounted:
    - name: {{ cluster.ocfs2.mount_point }}
    - device: {{ cluster.ocfs2.device }}
    - persist: true
    - config: {{ ocfs2.fstab }}
{%- if ocfs2.service_manager == "systemd" %}

ocfs2-clean-service-dead:
  service.dead:
    - name: {{ ocfs2.o2cb_service }}
    - enable: false
    - require:
      - mount: ocfs2-clean-mount-unmounted
{%- endif %}

ocfs2-clean-file-absent-o2cb-config:
  file.absent:
    - name: {{ ocfs2.o2cb_config }}
    - require:
      - mount: ocfs2-clean-mount-unmounted

{#- The shared volume, mounted now and at boot. fstab carries the boot order declaratively:
    _netdev (wait for the network) plus systemd dependencies on the iSCSI login service and
    o2cb, which replaces the thesis's renaming of init scripts. #}
{%- from "xenha/map.jinja" import cluster, me with context %}
{%- from "ocfs2/map.jinja" import ocfs2 with context %}
{%- from "iscsi/map.jinja" import initiator with context %}
{%- if ocfs2.mount %}

include:
  - ocfs2.service
  - ocfs2.format
{%-   if ocfs2.device_sls %}
  - {{ ocfs2.device_sls }}
{%-   endif %}

ocfs2-mount-mount-mounted:
  mount.mounted:
    - name: {{ cluster.ocfs2.mount_point }}
    - device: {{ cluster.ocfs2.device }}
    - fstype: ocfs2
    - opts:
      - _netdev
      - x-systemd.requires={{ initiator.login_unit }}
      - x-systemd.requires={{ ocfs2.o2cb_service }}.service
    - extra_mount_invisible_keys: [x-systemd.requires]
    - mkmnt: true
    - persist: true
    - config: {{ ocfs2.fstab }}
    - require:
      - sls: ocfs2.service
      - sls: ocfs2.format
{%-   if ocfs2.device_sls %}
      - sls: {{ ocfs2.device_sls }}
{%-   endif %}
{%- endif %}

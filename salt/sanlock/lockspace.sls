{#- The lockspace of the domU leases: the lease area initialised once, from one host
    (xenha:sanlock:init_host; an initialised area is never written again, only new domUs'
    lease areas are added), and every VM host joined with its host_id. A file fallback
    (lease_path not under /dev) is created on the init host when missing; a lease LUN comes
    from device_sls (the iSCSI login) and its udev link (iscsi.lease_device). #}
{%- from "xenha/map.jinja" import me with context %}
{%- from "sanlock/map.jinja" import sanlock, settings, on_device with context %}
{%- set init_host = me.id == settings.init_host %}
{%- set after = ["sanlock.package"] %}
{%- do after.append("sanlock.service") if sanlock.service_manager == "systemd" %}
{%- do after.append(sanlock.device_sls) if sanlock.device_sls %}
{%- do after.append("iscsi.lease_device") if settings.lease_lun %}

include: {{ after | json }}
{%- if init_host and not on_device %}

sanlock-lockspace-file-directory-area:
  file.directory:
    - name: {{ salt["file.dirname"](settings.lease_path) }}
    - makedirs: true

sanlock-lockspace-cmd-run-create-area:
  cmd.run:
    - name: fallocate -l {{ 1 + settings.slots }}MiB {{ settings.lease_path }}
    - creates: {{ settings.lease_path }}
    - require:
      - file: sanlock-lockspace-file-directory-area
    - require_in:
      - xenha_sanlock: sanlock-lockspace-xenha_sanlock-lockspace_present
{%- endif %}
{%- if init_host %}

sanlock-lockspace-xenha_sanlock-lockspace_present:
  xenha_sanlock.lockspace_present:
    - name: xenha
    - require:
{%-   for sls in after %}
      - sls: {{ sls }}
{%-   endfor %}
{%- endif %}

sanlock-lockspace-xenha_sanlock-joined:
  xenha_sanlock.joined:
    - name: xenha
    - require:
{%- for sls in after %}
      - sls: {{ sls }}
{%- endfor %}
{%- if init_host %}
      - xenha_sanlock: sanlock-lockspace-xenha_sanlock-lockspace_present
{%- else %}
    # the init host may initialise the lockspace in this same run
    - retry: {{ sanlock.join_retry | json }}
{%- endif %}

{#- Undo the sanlock formula on this host: leave the lockspace (refused while this host holds
    domU leases: move its domUs away first), stop the daemons, remove the units and settings.
    The lease area is never touched. #}
{%- from "sanlock/map.jinja" import sanlock with context %}

sanlock-clean-module-run-leave:
  module.run:
    - xenha_sanlock.leave: []
{%- if sanlock.service_manager == "systemd" %}

sanlock-clean-service-disabled-lockspace-unit:
  service.disabled:
    - name: {{ sanlock.lockspace_unit }}
    - require:
      - module: sanlock-clean-module-run-leave

sanlock-clean-service-dead:
  service.dead:
    - name: {{ sanlock.service }}
    - enable: false
    - require:
      - module: sanlock-clean-module-run-leave

sanlock-clean-service-dead-wdmd:
  service.dead:
    - name: {{ sanlock.wdmd_service }}
    - enable: false
    - require:
      - service: sanlock-clean-service-dead

sanlock-clean-file-absent-units:
  file.absent:
    - names:
      - {{ sanlock.systemd_dir }}/{{ sanlock.lockspace_unit }}.service
      - {{ sanlock.systemd_dir }}/{{ sanlock.service }}.service.d/xenha.conf
    - require:
      - service: sanlock-clean-service-dead
      - service: sanlock-clean-service-disabled-lockspace-unit
{%- endif %}

sanlock-clean-file-absent-config:
  file.absent:
    - names:
      - {{ sanlock.config }}
      - {{ sanlock.modules_load_file }}
    - require:
      - module: sanlock-clean-module-run-leave

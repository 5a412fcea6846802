{#- Undo the xen formula's migration access on this host: the key pair, the authorized key,
    the forced command, the ssh client settings and pinned host keys (xm: the SSL key and
    certificate). Packages and the xendomains settings stay. #}
{%- from "xenha/map.jinja" import cluster with context %}
{%- from "xen/map.jinja" import xen with context %}
{%- set ssh = cluster.xen.ssh %}
{%- if cluster.xen.toolstack == "xl" %}
{%-   set key_type, key_body = (ssh.public_key.split() + ["", ""])[:2] %}

xen-clean-ssh_auth-absent-migrate-key:
  ssh_auth.absent:
    - name: {{ key_body }}
    - user: {{ ssh.user }}
    - enc: {{ key_type }}
{%-   if xen.ssh.authorized_keys %}
    - config: {{ xen.ssh.authorized_keys }}
{%-   endif %}

xen-clean-file-absent-migration-files:
  file.absent:
    - names:
      - {{ ssh.identity_file }}
      - {{ ssh.identity_file }}.pub
      - {{ xen.ssh.receiver }}
      - {{ xen.ssh.client_config }}
      - {{ xen.ssh.known_hosts }}
    - require:
      - ssh_auth: xen-clean-ssh_auth-absent-migrate-key
{%- else %}

xen-clean-file-absent-relocation-ssl:
  file.absent:
    - names:
      - {{ xen.ssl_dir }}/xenha-relocation.key
      - {{ xen.ssl_dir }}/xenha-relocation.crt
{%- endif %}

{#- xl migrates over ssh as root (xenha:xen:ssh:user). The VM hosts share one key pair
    (pillar); a peer may use it only from a VM host's address and only to run
    `xl migrate-receive` (a forced command, no forwarding, no tty), and ssh to the peers trusts
    only their pinned host keys. #}
{%- from "xenha/map.jinja" import cluster, me, vmhosts with context %}
{%- from "xen/map.jinja" import xen with context %}
{%- set ssh = cluster.xen.ssh %}
{%- set key_type, key_body = (ssh.public_key.split() + ["", ""])[:2] %}
{%- set sources = vmhosts | rejectattr("id", "equalto", me.id) | map(attribute="ip") | list %}
{%- for name, template in (("receiver", "migrate-receive"), ("client_config", "ssh_config"),
                           ("known_hosts", "known_hosts")) %}
{%-   set contents %}{% include "xen/files/" ~ template ~ ".jinja" %}{% endset %}

xen-migration-file-managed-{{ name | replace("_", "-") }}:
  file.managed:
    - name: {{ xen.ssh[name] }}
    - contents: {{ (contents ~ "\n") | json }}
    - mode: "{{ '0755' if name == 'receiver' else '0644' }}"
    - makedirs: true
{%- endfor %}

xen-migration-file-managed-private-key:
  file.managed:
    - name: {{ ssh.identity_file }}
    - contents: {{ ssh.private_key | json }}
    - user: root
    - group: root
    - mode: "0600"
    - makedirs: true
    - dir_mode: "0700"
    - show_changes: false

xen-migration-file-managed-public-key:
  file.managed:
    - name: {{ ssh.identity_file }}.pub
    - contents: {{ ssh.public_key | json }}
    - mode: "0644"
    - require:
      - file: xen-migration-file-managed-private-key

xen-migration-ssh_auth-present-migrate-key:
  ssh_auth.present:
    - name: {{ key_body }}
    - user: {{ ssh.user }}
    - enc: {{ key_type }}
    - comment: xenha-migrate
{%- if xen.ssh.authorized_keys %}
    - config: {{ xen.ssh.authorized_keys }}
{%- endif %}
    - options:
      - from="{{ sources | join(",") }}"
      - restrict
      - command="{{ xen.ssh.receiver }}"
    - require:
      - file: xen-migration-file-managed-receiver

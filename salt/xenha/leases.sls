{#- The storage-lease directory on the shared OCFS2 volume (xenha_lease renews leases there). #}
{%- from "xenha/map.jinja" import cluster with context %}

include:
  - ocfs2

xenha-leases-file-directory-leases-dir:
  file.directory:
    - name: {{ cluster.leases.dir }}
    - makedirs: true
    - user: root
    - group: root
    - mode: "0700"
    - require:
      - sls: ocfs2

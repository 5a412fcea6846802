{#- Cluster-wide part of xenha: the pillar check (every formula runs it while rendering; this
    state reports the outcome). #}
{%- from "xenha/map.jinja" import cluster, me with context %}

xenha-pillar-test-succeed_without_changes:
  test.succeed_without_changes:
    - name: >-
        xenha pillar is valid: {{ cluster.hosts | length }} hosts,
        {{ cluster.vmhosts | length }} VM hosts, storage on {{ cluster.storage_host }},
        {{ cluster.domus | length }} domUs; this is {{ me.id }} ({{ me.role }})

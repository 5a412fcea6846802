{#- Two heartbeat minions on loopback addresses, each the other's peer, with the default timings.
    Only xenha-hb-a probes its toolstack (a fake xl the test controls). #}
{%- set hosts = {"xenha-hb-a": "127.0.0.11", "xenha-hb-b": "127.0.0.12"} %}
{%- set me = grains["id"] %}
beacons:
  xenha_heartbeat:
    - key: xenha-functional-test-key
    - bind: {{ hosts[me] }}
    - port: 17788
    - cluster: functional
    - probe_interval: {{ 1 if me == "xenha-hb-a" else 0 }}
    - peers:
{%- for id, ip in hosts | dictsort if id != me %}
        {{ id }}: {{ ip }}
{%- endfor %}

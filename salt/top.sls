{#- Targets by the role each minion has in the xenha pillar (xenha:hosts:<id>:role); minions
    that are not cluster members get nothing. #}
{%- set role = salt["pillar.get"]("xenha:hosts:" ~ grains.id ~ ":role") %}
base:
{%- if role == "storage" %}
  '{{ grains.id }}':
    - xenha
    - ntp
    - hosts
    - iscsi.target
{%- elif role == "vmhost" %}
  '{{ grains.id }}':
    - xenha
    - ntp
    - hosts
    - xenha.shutdown
    - iscsi.initiator
    - ocfs2
    - xen
    - sanlock
    - xenha.retired
{%- else %}
  {}
{%- endif %}

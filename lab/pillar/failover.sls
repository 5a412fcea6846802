{#- Failover in the lab (lab/failover.py): the lease folder and the domUs under xenha, from the
    run folder's xenha/failover.yaml (a pillar root before this one), written when a lab
    switches failover on. Labs without it get nothing from here. #}
{%- load_yaml as failover %}
{%- include "xenha/failover.yaml" ignore missing %}
{%- endload %}
{%- if failover %}
{{ failover | json }}
{%- endif %}

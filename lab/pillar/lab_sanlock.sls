{#- The lab's lease area: a file on the run folder's shared folder (lab/sanlock), whose path
    the run's xenha/sanlock.yaml gives (a pillar root before this one, written at `up`). Labs
    without it get nothing from here. #}
{%- load_yaml as sanlock %}
{%- include "xenha/sanlock.yaml" ignore missing %}
{%- endload %}
{%- if sanlock %}
xenha:
  sanlock: {{ sanlock | json }}
{%- endif %}

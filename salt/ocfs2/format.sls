{#- The shared device gets OCFS2 once, from the one designated host (xenha:ocfs2:format_host),
    only while it holds no signature at all: OCFS2 already there is left alone, anything else
    (another filesystem, a partition table) is refused with an error. #}
{%- from "xenha/map.jinja" import cluster, me with context %}
{%- from "ocfs2/map.jinja" import ocfs2 with context %}
{%- if me.id == cluster.ocfs2.format_host %}

include:
  - ocfs2.package
{%-   if ocfs2.device_sls %}
  - {{ ocfs2.device_sls }}
{%-   endif %}

ocfs2-format-xenha_o2cb-formatted:
  xenha_o2cb.formatted:
    - name: {{ cluster.ocfs2.device }}
    - label: {{ cluster.ocfs2.label }}
    - slots: {{ cluster.ocfs2.slots }}
    - block_size: {{ ocfs2.mkfs.block_size }}
    - cluster_size: {{ ocfs2.mkfs.cluster_size }}
    - feature_level: {{ ocfs2.mkfs.feature_level }}
    - require:
      - sls: ocfs2.package
{%-   if ocfs2.device_sls %}
      - sls: {{ ocfs2.device_sls }}
{%-   endif %}
{%- endif %}

{#- Failover events a person must hear about (blocked, fenced, done) go to the alert runner,
    which decides, checks the event against the journal and sends. One reaction, no logic. #}
xenha-reactor-failover-alert-runner-xenha-alert-failover-event:
  runner.xenha_alert.failover_event:
    - args:
      - tag: {{ tag | json }}
      - data: {{ data | json }}

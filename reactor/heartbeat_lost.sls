{#- A heartbeat loss goes to the failover runner, which re-verifies it: any minion can put a
    forged event on the bus. One reaction, no logic; |json quotes the event's values safely. #}
xenha-reactor-heartbeat-lost-runner-xenha-failover:
  runner.xenha.failover:
    - args:
      - host: {{ data.get("peer") | json }}
      - reporter: {{ tag.split("/")[2] | json }}
      - event: {{ data | json }}

{#- A VM host's report of a failed monitored domU (xenha_guests beacon) goes to the guest
    monitoring runner, which asks the host again before it acts: any minion can put events on
    the bus. One reaction, no logic; |json quotes the event's values safely. #}
xenha-reactor-guest-failed-runner-xenha-guest-failed:
  runner.xenha.guest_failed:
    - args:
      - host: {{ tag.split("/")[2] | json }}
      - domu: {{ data.get("domu") | json }}
      - reason: {{ data.get("reason") | json }}
      - detail: {{ data.get("detail") | json }}

{#- A VM host back from a shutdown or reboot (its xenha-shutdown unit's start,
    xenha_shutdown.back) says so. The host is the event's sender, data["id"], which the master
    checked against the minion's key: a minion can say this for itself only. host_back ends the
    maintenance the shutdown drain set (never an operator's) and runs failback for it; under
    shutdown_policy freeze or failover it changes nothing. One reaction, no logic. #}
xenha-reactor-shutdown-back-runner-xenha-host-back:
  runner.xenha.host_back:
    - args:
      - host: {{ data.get("id") | json }}

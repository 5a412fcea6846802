{#- A VM host going down on purpose (xenha_shutdown.drain, shutdown_policy migrate) asks to be
    evacuated. The host is the event's sender, data["id"], which the master checked against
    the minion's key: a minion can ask this for itself only, and evacuate refuses a host that is
    not a cluster VM host. drain: the maintenance it sets is the drain's, which the host's
    return lifts (reactor/shutdown_back.sls). One reaction, no logic. #}
xenha-reactor-shutdown-evacuate-runner-xenha-evacuate:
  runner.xenha.evacuate:
    - args:
      - host: {{ data.get("id") | json }}
      - drain: true

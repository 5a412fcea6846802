{#- A VM host's toolstack failing or answering again (heartbeat beacon) goes to the guest
    monitoring runner, which asks the host itself before it marks it degraded or lifts the
    mark. One reaction, no logic. #}
xenha-reactor-host-toolstack-runner-xenha-host-toolstack:
  runner.xenha.host_toolstack:
    - args:
      - host: {{ tag.split("/")[2] | json }}
      - event: {{ tag.split("/")[-1] | json }}

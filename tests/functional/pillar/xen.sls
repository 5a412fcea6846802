{#- The two xenha_xen minions of tests/functional/test_xen.py: the xl stand-in, and the ssh
    transport options xl migrate gets (the stand-in logs them; nothing connects). #}
xenha:
  xen:
    toolstack: xl
    ssh:
      port: 2222
      connect_timeout: 5

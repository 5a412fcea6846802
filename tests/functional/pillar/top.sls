base:
  '*':
    - functional

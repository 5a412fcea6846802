xenha_functional: true

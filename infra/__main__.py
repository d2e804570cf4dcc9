"""`python -m infra`: the same CLI as the `flashsale` console script."""

from infra.stack.cli import main

main()

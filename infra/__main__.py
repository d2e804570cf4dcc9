"""`python -m infra`: the same CLI as the `flashsale` console script."""

from infra.cli import main

main()

"""The rules of a sale: who joins, who is admitted, what is sold. Each decision is one Lua
script in ``lua/``, run atomically on the sale's own Redis shard.

- ``lua/*.lua``: the scripts; ``lib.lua`` holds the helpers they share.
- ``scripts``: ``SaleScripts`` loads them and calls them with the right keys and arguments.
- ``keys``: ``SaleKeys``, the Redis key names of one sale (all with the hash tag ``{id}``).
- ``views``: the sale named by a path, and the public sale and product views.
- ``shuffle``: the pre-queue's commit-reveal: the seed, its commitment, each visitor's draw.

May import the ground floor (``infra.settings``, ``infra.constants``, ``infra.redis``) and
``infra.web.errors`` (a view answers an unknown sale with ``NotFound``). Never ``infra.stack``,
never a service package.
"""

"""What every adapter that talks to an outside system shares: credentials by reference, and how
an HTTP answer says when to try again. Below the adapters (store, sources, actions), above the
domain: the pulled sources and the outbound actions both use it without knowing each other."""

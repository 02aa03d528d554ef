"""An account ledger: the second example service, and a state whose invariant a test can
check after any attack (pbft/service/api.py).

Money is created once, at setup: `accounts` accounts named c0, c1, ... (the simulator's
client names) each hold `balance`. After that only transfers move it, so the sum of all
balances never changes, whatever the clients send and whatever f Byzantine replicas do:
a check of the agreed order that finds another total found a real bug.

    ["transfer", to, amount]  -> ["ok", new balance of the sender]
                                  or ["refused", reason]   (the sender is the client)
    ["balance", account]      -> balance, or null for no such account   (read-only)
    ["total"]                 -> the sum of all balances                 (read-only)

Accounts are keys b"acct/<name>" with the balance as a CBOR integer.
"""

from __future__ import annotations

from ..protocol import codec
from .api import MAX_SCAN, Service, State, error_result

PREFIX = b"acct/"
END = b"acct0"  # the least key above every b"acct/..."


def account_key(name: str) -> bytes:
    return PREFIX + name.encode()


class Ledger(Service):
    name = "pbft.ledger"
    version = "1"

    def __init__(self, accounts: int = 8, balance: int = 1000) -> None:
        if accounts < 0 or balance < 0:
            raise ValueError("accounts and balance must not be negative")
        self.accounts, self.balance = accounts, balance

    def setup(self, state: State) -> None:
        for i in range(self.accounts):
            state.put(account_key(f"c{i}"), codec.encode(self.balance))

    def execute(self, state: State, operation: bytes, client: str) -> bytes:
        op = codec.decode(operation)  # malformed: an error result (Hosted)
        match op:
            case ["transfer", str() as to, int() as amount] if type(amount) is int:
                return self._transfer(state, client, to, amount)
        read = self.query(state, operation, client)
        return read if read is not None else error_result("unknown operation")

    def _transfer(self, state: State, sender: str, to: str, amount: int) -> bytes:
        if amount <= 0:
            return codec.encode(["refused", "the amount must be positive"])
        if to == sender:
            return codec.encode(["refused", "a transfer to oneself"])
        src, dst = state.get(account_key(sender)), state.get(account_key(to))
        if src is None or dst is None:
            return codec.encode(["refused", "no such account"])
        have, their = codec.decode(src), codec.decode(dst)
        if have < amount:
            return codec.encode(["refused", "insufficient funds"])
        state.put(account_key(sender), codec.encode(have - amount))
        state.put(account_key(to), codec.encode(their + amount))
        return codec.encode(["ok", have - amount])

    def sample_operation(self, rng, client: str, clients: list[str]) -> tuple[bytes, bool]:
        """Mostly transfers (some too large, some to an account that does not exist), and
        balance and total reads."""
        r = rng.random()
        if r < 0.7:
            to = rng.choice([c for c in clients if c != client] + ["nobody"])
            return codec.encode(["transfer", to, rng.randrange(1, self.balance // 2 + 2)]), False
        if r < 0.9:
            return codec.encode(["balance", rng.choice(clients)]), True
        return codec.encode(["total"]), True

    def query(self, state: State, operation: bytes, client: str) -> bytes | None:
        op = codec.decode(operation)
        match op:
            case ["balance", str() as account]:
                raw = state.get(account_key(account))
                return codec.encode(None if raw is None else codec.decode(raw))
            case ["total"]:
                return codec.encode(total(state))
        return None


def total(state: State) -> int:
    """The sum of all balances (paging through the accounts)."""
    out, start = 0, PREFIX
    while True:
        page = state.scan(start, END, MAX_SCAN)
        out += sum(codec.decode(v) for _, v in page)
        if len(page) < MAX_SCAN:
            return out
        start = page[-1][0] + b"\0"

"""The Redis keys of claims (every pool key carries its template's hash tag) and the constants the scripts share."""

from __future__ import annotations

from dataclasses import dataclass

POOLS_KEY = "coupon:pools"
DENY_KEY = "coupon:claim-denylist"
NEVER_MS = 2**53  # "no end": larger than any millisecond timestamp, exact in Lua's doubles
SCRIPT_PACKAGE = "coupon"


def tag(template_id: int) -> str:
    """The key prefix (with its hash tag) of ``template_id``'s pool."""
    return f"coupon:{{tpl:{template_id}}}"


@dataclass(frozen=True, slots=True)
class PoolKeys:
    """The keys of one template's pool."""

    template_id: int

    @property
    def meta(self) -> str:
        """Template meta hash (limit, window, own stock)."""
        return f"{tag(self.template_id)}:meta"

    @property
    def users(self) -> str:
        """Per-user counts."""
        return f"{tag(self.template_id)}:users"

    @property
    def claims(self) -> str:
        """The claim ledger."""
        return f"{tag(self.template_id)}:claims"

    @property
    def pending(self) -> str:
        """Accepted claims not yet persisted."""
        return f"{tag(self.template_id)}:pending"

    @property
    def idem(self) -> str:
        """Idempotency keys."""
        return f"{tag(self.template_id)}:idem"

    @property
    def rebuild_lock(self) -> str:
        """Held while a lost pool is rebuilt."""
        return f"{tag(self.template_id)}:rebuild"

    def session(self, session_id: int) -> str:
        """A flash session's hash."""
        return f"{tag(self.template_id)}:s:{session_id}"

    def all_static(self) -> list[str]:
        """Every key but the sessions' (for tests and cleanup)."""
        return [self.meta, self.users, self.claims, self.pending, self.idem]

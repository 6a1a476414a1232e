"""Reads for the billing page, from dj-stripe's synced objects."""

from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal

from djstripe.models import Invoice

# Stripe amounts are in the currency's smallest unit; these currencies have none smaller than the unit.
ZERO_DECIMAL_CURRENCIES = {
    "bif",
    "clp",
    "djf",
    "gnf",
    "jpy",
    "kmf",
    "krw",
    "mga",
    "pyg",
    "rwf",
    "ugx",
    "vnd",
    "vuv",
    "xaf",
    "xof",
    "xpf",
}


@dataclass(frozen=True)
class InvoiceRow:
    created: datetime | None
    number: str
    amount: Decimal
    currency: str
    status: str
    url: str


def invoices_for(*, user, limit: int = 24) -> list[InvoiceRow]:
    rows = []
    for invoice in Invoice.objects.filter(customer__subscriber=user).order_by("-created")[:limit]:
        data = invoice.stripe_data
        currency = (data.get("currency") or "usd").lower()
        cents = Decimal(data.get("total") or 0)
        created = data.get("created")
        rows.append(
            InvoiceRow(
                created=datetime.fromtimestamp(created, UTC) if created else None,
                number=data.get("number") or "",
                amount=cents if currency in ZERO_DECIMAL_CURRENCIES else cents / 100,
                currency=currency.upper(),
                status=(data.get("status") or "").capitalize(),
                url=data.get("hosted_invoice_url") or "",
            )
        )
    return rows

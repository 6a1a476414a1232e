"""A fake of Stripe's HTTP API for tests and benchmarks: a real HTTP server the real stripe-python and dj-stripe
code talks to (they are pointed at it through `stripe.api_base`). Objects start from Stripe's own examples
(tests/fixtures/stripe/fixtures3.json, from the stripe/openapi repository, MIT) and change as the real API
would change them, for the calls this project makes. Tests set Stripe's side of the world (a subscription's
status, ...) on the fake, then deliver a signed webhook, exactly as Stripe would.

Failure injection: `fail_next(n, status)` answers the next n requests with an error; `lose_responses = n`
accepts the next n meter events but answers 500, as if the answer was lost; `rate_limit_per_second` answers
429 above that rate, as Stripe's live mode does for meter events.
"""

import copy
import json
import secrets
import socket
import threading
import time
from collections import deque
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qsl, urlsplit

import stripe

FIXTURES = json.loads((Path(__file__).resolve().parent / "fixtures/stripe/fixtures3.json").read_text())["resources"]
SECRET_KEY = "sk_test_FakeStripeKeyForTheTestSuite0123"
WEBHOOK_SECRET = "whsec_fake_0123456789"


def new_id(prefix: str) -> str:
    return f"{prefix}_{secrets.token_hex(8)}"


def nested(pairs: list[tuple[str, str]]) -> dict:
    """Stripe's form encoding (a[b][0][c]=x, expand[]=y) back into nested dicts and lists."""
    root: dict = {}
    for key, value in pairs:
        parts = key.replace("]", "").split("[")
        node = root
        for index, part in enumerate(parts):
            last = index == len(parts) - 1
            following = None if last else parts[index + 1]
            container = [] if following == "" or (following or "").isdigit() else {}
            if isinstance(node, list):
                slot = len(node) if part == "" else int(part)
                while len(node) <= slot:
                    node.append(None)
                if last:
                    node[slot] = value
                else:
                    node[slot] = node[slot] if node[slot] is not None else container
                    node = node[slot]
            elif last:
                node[part] = value
            else:
                node = node.setdefault(part, container)
    return root


def stripe_list(data: list, url: str) -> dict:
    return {"object": "list", "data": data, "has_more": False, "url": url}


class ApiError(Exception):
    def __init__(self, status: int, message: str, *, code: str = "", kind: str = "invalid_request_error"):
        self.status, self.body = status, {"error": {"type": kind, "message": message, "code": code or None}}


class FakeStripe:
    def __init__(self):
        self.lock = threading.Lock()
        self.objects: dict[str, dict] = {}
        self.requests: list[tuple[str, str, dict]] = []
        self.unhandled: list[str] = []
        self.meter_events: list[dict] = []
        self.meter_event_identifiers: set[str] = set()
        self.idempotent_responses: dict[str, tuple[int, dict]] = {}
        self.failures: deque[int] = deque()
        self.rate_limit_per_second: int | None = None
        self.lose_responses = 0  # meter events accepted, but the answer never arrives (a timeout, a crash)
        self._window: deque[float] = deque()
        self.server: ThreadingHTTPServer | None = None
        self.account = copy.deepcopy(FIXTURES["account"])

    # --- Stripe's side of the world, as tests set it --------------------------------------------------------

    def put(self, obj: dict) -> dict:
        with self.lock:
            self.objects[obj["id"]] = obj
        return obj

    def get(self, object_id: str) -> dict:
        return self.objects[object_id]

    def product(self, product_id: str = "", **fields) -> dict:
        product = copy.deepcopy(FIXTURES["product"])
        product.update(id=product_id or new_id("prod"), description=None, package_dimensions=None, type="service")
        product.update(fields)
        return self.put(product)

    def price(self, *, product: dict, lookup_key: str | None = None, unit_amount: int = 2000, **fields) -> dict:
        price = copy.deepcopy(FIXTURES["price"])
        price.update(
            id=new_id("price"),
            product=product["id"],
            lookup_key=lookup_key,
            unit_amount=unit_amount,
            unit_amount_decimal=str(unit_amount),
            transform_quantity=None,
        )
        price.update(fields)
        return self.put(price)

    def customer(self, **fields) -> dict:
        customer = copy.deepcopy(FIXTURES["customer"])
        customer.update(id=new_id("cus"), discount=None, created=int(time.time()))
        customer.update(fields)
        return self.put(customer)

    def subscription(self, *, customer: str, price: dict, status: str = "active", start: int, end: int, **fields):
        """A subscription as the dahlia API shows it: the current period lives on its item."""
        subscription = copy.deepcopy(FIXTURES["subscription"])
        subscription_id = fields.pop("id", None) or new_id("sub")
        item = copy.deepcopy(FIXTURES["subscription"]["items"]["data"][0])
        item.update(
            id=new_id("si"),
            price=price,
            subscription=subscription_id,
            current_period_start=start,
            current_period_end=end,
            plan=None,
            billing_thresholds=None,
        )
        subscription.update(
            id=subscription_id,
            customer=customer,
            status=status,
            items=stripe_list([item], f"/v1/subscription_items?subscription={subscription_id}"),
            billing_cycle_anchor=start,
            start_date=start,
            created=start,
            cancel_at=None,
            canceled_at=None,
            cancel_at_period_end=False,
            ended_at=None,
            latest_invoice=None,
            schedule=None,
            pending_setup_intent=None,
            pending_update=None,
            default_payment_method=None,
            default_source=None,
            discounts=[],
            test_clock=None,
            trial_start=None,
            trial_end=None,
            on_behalf_of=None,
            transfer_data=None,
            application=None,
            next_pending_invoice_item_invoice=None,
            pending_invoice_item_interval=None,
            pause_collection=None,
            billing_thresholds=None,
        )
        subscription.update(fields)
        return self.put(subscription)

    def event(self, event_type: str, obj: dict) -> dict:
        """A webhook event carrying a snapshot of `obj` as it is now."""
        event = copy.deepcopy(FIXTURES["event"])
        event.update(
            id=new_id("evt"),
            type=event_type,
            created=int(time.time()),
            api_version=stripe.api_version,
            livemode=False,
            data={"object": copy.deepcopy(obj)},
            pending_webhooks=1,
            request={"id": None, "idempotency_key": None},
        )
        return event

    def fail_next(self, count: int, status: int = 500) -> None:
        with self.lock:
            self.failures.extend([status] * count)

    def metered(self) -> dict[str, int]:
        """Tokens Stripe's meter holds per customer."""
        totals: dict[str, int] = {}
        for event in self.meter_events:
            customer = event["payload"]["stripe_customer_id"]
            totals[customer] = totals.get(customer, 0) + int(event["payload"]["value"])
        return totals

    def paths(self, method: str | None = None) -> list[str]:
        return [path for verb, path, _ in self.requests if method in (None, verb)]

    # --- the HTTP API -------------------------------------------------------------------------------------

    def handle(self, method: str, path: str, params: dict, headers) -> tuple[int, dict]:
        with self.lock:
            self.requests.append((method, path, params))
            if self.failures:
                status = self.failures.popleft()
                if status == 429:
                    raise ApiError(429, "Too many requests in a short period of time.", code="rate_limit")
                raise ApiError(status, "An error occurred with our connection to Stripe.", kind="api_error")
            if self.rate_limit_per_second:
                now = time.monotonic()
                while self._window and self._window[0] < now - 1:
                    self._window.popleft()
                if len(self._window) >= self.rate_limit_per_second:
                    raise ApiError(429, "Too many requests in a short period of time.", code="rate_limit")
                self._window.append(now)
        if headers.get("Authorization") != f"Bearer {SECRET_KEY}":
            raise ApiError(401, "Invalid API Key provided.", kind="invalid_request_error")
        key = headers.get("Idempotency-Key")
        if method == "POST" and key and key in self.idempotent_responses:
            return self.idempotent_responses[key]
        answer = self.route(method, path, params)
        if method == "POST" and key:
            self.idempotent_responses[key] = answer
        return answer

    def route(self, method: str, path: str, params: dict) -> tuple[int, dict]:
        parts = path.strip("/").split("/")[1:]  # drop "v1"
        if method == "GET" and parts == ["account"]:
            return 200, self.account
        if parts == ["billing", "meter_events"] and method == "POST":
            return self.meter_event_create(params)
        if parts == ["billing", "meters"]:
            if method == "GET":
                return 200, stripe_list(self.of_type("billing.meter"), "/v1/billing/meters")
            meter = copy.deepcopy(FIXTURES["billing.meter"])
            meter.update(id=new_id("mtr"), event_name=params["event_name"], display_name=params["display_name"])
            return 200, self.put(meter)
        if parts == ["customers"] and method == "POST":
            return 200, self.customer(
                email=params.get("email"), name=params.get("name"), metadata=params.get("metadata", {})
            )
        if parts == ["checkout", "sessions"] and method == "POST":
            return 200, self.checkout_session_create(params)
        if parts == ["billing_portal", "sessions"] and method == "POST":
            session = copy.deepcopy(FIXTURES["billing_portal.session"])
            session.update(
                id=new_id("bps"),
                customer=params["customer"],
                return_url=params.get("return_url"),
                flow=None,
                livemode=False,
                url=f"https://billing.stripe.com/p/session/test_{secrets.token_hex(12)}",
            )
            return 200, self.put(session)
        if parts == ["prices"] and method == "GET":
            keys = set(params.get("lookup_keys", []))
            prices = [p for p in self.of_type("price") if not keys or p.get("lookup_key") in keys]
            return 200, stripe_list(prices, "/v1/prices")
        if parts == ["prices"] and method == "POST":
            return 200, self.price_create(params)
        if parts == ["products"] and method == "POST":
            product_id = params.get("id") or new_id("prod")
            if product_id in self.objects:
                raise ApiError(400, f"Product already exists: {product_id}", code="resource_already_exists")
            return 200, self.product(product_id, name=params["name"], metadata=params.get("metadata", {}))
        if len(parts) == 3 and parts[0] == "products" and parts[2] == "features":
            return 200, stripe_list([], path)
        if parts[0] == "invoices" and len(parts) == 1 and method == "GET":
            invoices = [i for i in self.of_type("invoice") if i.get("customer") == params.get("customer")]
            return 200, stripe_list(invoices, "/v1/invoices")
        if len(parts) >= 2 and method in ("GET", "POST"):
            obj = self.objects.get(parts[-1] if len(parts) == 2 else parts[1])
            if obj is None:
                raise ApiError(404, f"No such object: '{parts[1]}'", code="resource_missing")
            if method == "POST":  # an update: the given fields replace the object's
                obj.update({k: v for k, v in params.items() if k not in ("expand",)})
            return 200, obj
        self.unhandled.append(f"{method} {path}")
        raise ApiError(404, f"Unrecognized request URL ({method}: {path}).")

    def of_type(self, object_type: str) -> list[dict]:
        return [o for o in list(self.objects.values()) if o.get("object") == object_type]

    def meter_event_create(self, params: dict) -> tuple[int, dict]:
        identifier = params.get("identifier") or new_id("mev")
        with self.lock:
            if identifier in self.meter_event_identifiers:
                raise ApiError(
                    400,
                    f"An event already exists with identifier {identifier}.",
                    code="resource_already_exists",
                )
            event = copy.deepcopy(FIXTURES["billing.meter_event"])
            event.update(
                created=int(time.time()),
                event_name=params["event_name"],
                identifier=identifier,
                payload=params["payload"],
                timestamp=int(params.get("timestamp") or time.time()),
            )
            self.meter_events.append(event)
            self.meter_event_identifiers.add(identifier)
            if self.lose_responses:
                self.lose_responses -= 1
                raise ApiError(500, "An error occurred with our connection to Stripe.", kind="api_error")
        return 200, event

    def checkout_session_create(self, params: dict) -> dict:
        session = copy.deepcopy(FIXTURES["checkout.session"])
        session_id = f"cs_test_{secrets.token_hex(16)}"
        session.update(
            id=session_id,
            mode=params.get("mode"),
            customer=params.get("customer"),
            client_reference_id=params.get("client_reference_id"),
            success_url=params.get("success_url"),
            cancel_url=params.get("cancel_url"),
            metadata=params.get("metadata", {}),
            status="open",
            url=f"https://checkout.stripe.com/c/pay/{session_id}",
            line_items_requested=params.get("line_items", []),
        )
        return self.put(session)

    def price_create(self, params: dict) -> dict:
        product = self.objects[params["product"]]
        recurring = params.get("recurring", {})
        price = self.price(
            product=product,
            lookup_key=params.get("lookup_key"),
            unit_amount=int(params.get("unit_amount", 0) or 0),
            currency=params.get("currency", "usd"),
            nickname=params.get("nickname"),
            metadata=params.get("metadata", {}),
        )
        if "unit_amount_decimal" in params:
            price.update(unit_amount=None, unit_amount_decimal=params["unit_amount_decimal"])
        price["recurring"].update(
            interval=recurring.get("interval", "month"),
            usage_type=recurring.get("usage_type", "licensed"),
            meter=recurring.get("meter"),
        )
        if params.get("transfer_lookup_key") == "true":
            for other in self.of_type("price"):
                if other is not price and other.get("lookup_key") == price["lookup_key"]:
                    other["lookup_key"] = None
        return price

    # --- serving ------------------------------------------------------------------------------------------

    def start(self) -> "FakeStripe":
        fake = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):
                pass

            def setup(self):
                super().setup()
                # Headers and body go out in two writes: without this, Nagle + delayed ACK add 40 ms a call.
                self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

            def _serve(self):
                url = urlsplit(self.path)
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length).decode() if length else ""
                params = nested(parse_qsl(url.query, keep_blank_values=True) + parse_qsl(body, keep_blank_values=True))
                try:
                    status, payload = fake.handle(self.command, url.path, params, self.headers)
                except ApiError as error:
                    status, payload = error.status, error.body
                data = json.dumps(payload).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.send_header("Request-Id", new_id("req"))
                if status == 429:
                    self.send_header("Stripe-Should-Retry", "false")
                self.end_headers()
                self.wfile.write(data)

            do_GET = do_POST = do_DELETE = _serve

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        return self

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def stop(self) -> None:
        if self.server:
            self.server.shutdown()
            self.server.server_close()


def sign(payload: str, secret: str = WEBHOOK_SECRET) -> str:
    """The Stripe-Signature header Stripe would send with `payload`: the real signing scheme."""
    return stripe.WebhookSignature.generate_signature_header(payload, secret)

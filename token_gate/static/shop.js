// The shop page's script: the product, Buy, the order, Pay and Cancel, through the gate's JSON
// API on this origin (the access token travels as the HttpOnly fs_access cookie).
(() => {
  "use strict";
  // What the gate filled in for this visitor: a data block, which no policy runs as a script.
  const page = JSON.parse(document.getElementById("fs-shop").textContent);
  const PRODUCT = page.product_id;
  const ACCESS_EXPIRES_MS = page.access_expires_ms;
  const API = "/products/" + PRODUCT;
  const STORE = "fs_order_" + PRODUCT; // the order survives a reload of this tab
  const $ = (id) => document.getElementById(id);

  const en = {
    brand: "Flash sale",
    buy_title: "Buy",
    quantity: "Quantity",
    buy: "Buy",
    buying: "Ordering…",
    limit: "At most {n} per person.",
    stock: "{left} left of {total}",
    access: "Your time to shop lasts until {time}.",
    state_paused: "Admissions are paused; if you are here, you can still buy.",
    state_sold_out: "Sold out.",
    state_closed: "This sale is not open.",
    order_title: "Your order",
    order_id: "Order number",
    total: "Total",
    pending: "Received: confirming your order…",
    placed: "Placed: awaiting payment",
    paid: "Paid: thank you!",
    cancelled_user: "Cancelled: the item went back on sale.",
    cancelled_expired: "Cancelled: the time to pay ran out and the item went back on sale.",
    hold: "Pay within {left}: the item is held for you until {time}.",
    hold_access: "Pay within {left}, while your time to shop lasts (until {time}).",
    hold_over: "The time to pay has run out.",
    card: "Card number",
    card_hint: "Test cards: 4000 0000 0000 0002 is always declined; any other 16-digit number is approved.",
    pay: "Pay {total}",
    paying: "Paying…",
    cancel: "Cancel order",
    cancelling: "Cancelling…",
    paid_notice: "Payment received. Your order number is {id}.",
    back_to_line: "Back to the waiting room",
    card_format: "Enter the 16 digits of the card number.",
    sold_out: "Sold out: the last item is gone. Nothing was charged.",
    limit_reached: "You have already bought your limit for this sale ({n} per person).",
    token_expired: "Your time to shop has run out. Join the line again in the waiting room.",
    token_missing: "This page has no access to this sale. Go to the waiting room to join the line.",
    rate_limited: "Too many requests at once. Wait {wait}, then try again.",
    payment_declined: "The card was declined. Nothing was charged; your order is still held, so you can try another card.",
    closed: "The sale is closed: no more orders are taken.",
    upstream_unavailable: "The shop is not answering right now. Try again in {wait}: the same click is sent again, so it cannot order twice.",
    network: "No connection to the shop. Check your network and try again: the same click is sent again, so it cannot order twice.",
    conflict: "This order can no longer be changed: it was cancelled or its time to pay ran out.",
    too_many: "Choose a smaller quantity.",
    not_found: "This sale or order no longer exists.",
    other: "Something went wrong ({code}). Please try again.",
  };
  const ko = {
    brand: "플래시 세일",
    buy_title: "구매",
    quantity: "수량",
    buy: "구매하기",
    buying: "주문하는 중…",
    limit: "1인당 최대 {n}개까지 살 수 있습니다.",
    stock: "{total}개 중 {left}개 남음",
    access: "{time}까지 쇼핑할 수 있습니다.",
    state_paused: "입장이 잠시 멈췄습니다. 이미 입장하셨다면 계속 구매할 수 있습니다.",
    state_sold_out: "품절되었습니다.",
    state_closed: "지금은 판매 중이 아닙니다.",
    order_title: "내 주문",
    order_id: "주문 번호",
    total: "합계",
    pending: "접수됨: 주문을 확인하는 중…",
    placed: "주문 완료: 결제를 기다리는 중",
    paid: "결제 완료: 감사합니다!",
    cancelled_user: "취소됨: 상품은 다시 판매됩니다.",
    cancelled_expired: "취소됨: 결제 시간이 지나 상품이 다시 판매됩니다.",
    hold: "{left} 안에 결제해 주세요. {time}까지 상품을 보관해 드립니다.",
    hold_access: "쇼핑 시간이 끝나는 {time}까지, {left} 안에 결제해 주세요.",
    hold_over: "결제 시간이 지났습니다.",
    card: "카드 번호",
    card_hint: "테스트 카드: 4000 0000 0000 0002는 항상 거절되고, 그 밖의 16자리 번호는 모두 승인됩니다.",
    pay: "{total} 결제하기",
    paying: "결제하는 중…",
    cancel: "주문 취소",
    cancelling: "취소하는 중…",
    paid_notice: "결제되었습니다. 주문 번호는 {id}입니다.",
    back_to_line: "대기실로 돌아가기",
    card_format: "카드 번호 16자리를 입력해 주세요.",
    sold_out: "품절: 마지막 상품까지 모두 팔렸습니다. 결제된 금액은 없습니다.",
    limit_reached: "이 판매의 구매 한도(1인당 {n}개)를 이미 채우셨습니다.",
    token_expired: "쇼핑 시간이 끝났습니다. 대기실에서 다시 줄을 서 주세요.",
    token_missing: "이 페이지에는 이 판매에 입장할 권한이 없습니다. 대기실에서 줄을 서 주세요.",
    rate_limited: "요청이 너무 많습니다. {wait} 기다린 뒤 다시 시도해 주세요.",
    payment_declined: "카드가 거절되었습니다. 결제된 금액은 없고 주문은 그대로 보관되니 다른 카드로 다시 시도해 주세요.",
    closed: "판매가 종료되어 더 이상 주문을 받지 않습니다.",
    upstream_unavailable: "지금 쇼핑몰이 응답하지 않습니다. {wait} 뒤에 다시 시도해 주세요. 같은 요청이 다시 전송되므로 두 번 주문되지 않습니다.",
    network: "쇼핑몰에 연결할 수 없습니다. 네트워크를 확인하고 다시 시도해 주세요. 같은 요청이 다시 전송되므로 두 번 주문되지 않습니다.",
    conflict: "이 주문은 더 이상 바꿀 수 없습니다. 취소되었거나 결제 시간이 지났습니다.",
    too_many: "수량을 줄여 주세요.",
    not_found: "이 판매 또는 주문이 더 이상 없습니다.",
    other: "문제가 생겼습니다({code}). 다시 시도해 주세요.",
  };

  // Codes whose outcome is unknown or "not now": the click keeps its Idempotency-Key, so
  // trying again is the same order, not a second one. Every other answer ends the click.
  const SAME_KEY_AGAIN = new Set(["network", "upstream_unavailable", "unavailable", "rate_limited", "internal"]);
  const TOKEN_CODES = new Set(["token_missing", "token_invalid", "token_wrong_product"]);

  const S = {
    product: null,
    order: null,
    busy: null,          // "buy" | "pay" | "cancel" while a click is on its way
    keys: {},            // click -> its Idempotency-Key, until the click has an answer
    notice: null,        // {key, vars, kind, source}
    waitUntil: 0,        // a Retry-After: actions wait until then (ms)
    entry: true,         // access is still good (false once the token is expired)
    holdAskedAt: 0,      // when the order was last asked for after its hold ran out
  };
  let orderTimer = null;

  function newKey() {
    // crypto.randomUUID needs a secure context; a plain-http deployment is not one.
    const bytes = crypto.getRandomValues(new Uint8Array(16));
    return Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("");
  }

  async function call(method, path, body, click) {
    const headers = { "Accept": "application/json" };
    if (body !== undefined) headers["Content-Type"] = "application/json";
    if (click) headers["Idempotency-Key"] = S.keys[click] || (S.keys[click] = newKey());
    let response;
    try {
      response = await fetch(path, {
        method, headers, credentials: "same-origin", cache: "no-store",
        body: body === undefined ? undefined : JSON.stringify(body),
      });
    } catch (_) {
      return { ok: false, code: "network", retryAfter: 0 };
    }
    let data = null;
    try { data = await response.json(); } catch (_) { /* not JSON: judged by the status */ }
    const code = response.ok ? null : (data && data.error) || (response.status >= 500 ? "internal" : "other");
    if (click && (response.ok || !SAME_KEY_AGAIN.has(code))) delete S.keys[click];
    return {
      ok: response.ok, status: response.status, data, code,
      detail: data && data.detail,
      retryAfter: Number(response.headers.get("Retry-After")) || 0,
    };
  }

  // `source` names what failed ("product", "order" for the background reads): their next
  // success takes the message away again. A click's refusal stays until the next click.
  function fail(reply, source) {
    let code = reply.code;
    // The cookie dies with the token (within a second), so past the deadline the API sees no
    // token at all: to the visitor that is still "your time ran out".
    if (TOKEN_CODES.has(code)) code = Date.now() >= ACCESS_EXPIRES_MS - 1000 ? "token_expired" : "token_missing";
    if (code === "invalid_request" && /at most/.test(reply.detail || "")) code = "too_many";
    if (code === "token_expired" || code === "token_missing") S.entry = false;
    const wait = Math.max(1, reply.retryAfter || (code === "network" ? 0 : 2));
    if (["rate_limited", "upstream_unavailable", "unavailable"].includes(code)) {
      S.waitUntil = Date.now() + wait * 1000;
      setTimeout(render, wait * 1000 + 50);
      code = code === "unavailable" ? "upstream_unavailable" : code;
    }
    // Seconds, not words: the words are made in render(), in the language of the moment.
    const vars = { waitS: wait, n: S.product ? S.product.per_user_limit : 1, code: reply.code };
    S.notice = { key: en[code] ? code : "other", vars, kind: "error", source };
  }

  function recovered(source) {
    if (S.notice && S.notice.source === source) S.notice = null;
  }

  async function loadProduct() {
    const reply = await call("GET", API);
    if (reply.ok) {
      S.product = reply.data;
      recovered("product");
    } else if (!S.product) {
      // Nothing to show yet: say why, and ask again soon rather than at the next refresh.
      fail(reply, "product");
      if (SAME_KEY_AGAIN.has(reply.code)) setTimeout(loadProduct, Math.max(2000, reply.retryAfter * 1000));
    }
    render();
  }

  function remember(order) {
    try {
      if (order && order.status !== "cancelled") sessionStorage.setItem(STORE, order.order_id);
      else sessionStorage.removeItem(STORE);
    } catch (_) { /* storage blocked: the order is still shown in this page */ }
  }

  function setOrder(order) {
    S.order = order;
    remember(order);
    clearTimeout(orderTimer);
    // pending -> placed happens when the order worker stores it; ask until it has.
    if (order.status === "pending") orderTimer = setTimeout(refreshOrder, 700);
    render();
  }

  async function refreshOrder() {
    if (!S.order) return;
    const reply = await call("GET", API + "/orders/" + S.order.order_id);
    if (reply.ok) {
      const before = S.order.status;
      recovered("order");
      setOrder(reply.data);
      if (before !== "cancelled" && reply.data.status === "cancelled") loadProduct();
    } else {
      if (reply.code !== "not_found") fail(reply, "order");
      if (S.entry && S.order.status === "pending") {
        orderTimer = setTimeout(refreshOrder, Math.max(1000, reply.retryAfter * 1000));
      }
      render();
    }
  }

  async function buy(event) {
    event.preventDefault();
    if (S.busy || !canAct()) return; // a second click while the first is on its way is the same click
    S.busy = "buy";
    S.notice = null;
    render();
    const reply = await call("POST", API + "/orders", { quantity: Number($("quantity").value) }, "buy");
    S.busy = null;
    if (reply.ok) {
      setOrder(reply.data);
      loadProduct();
      // The Buy button has just gone: the keyboard continues where the next step is.
      if (!$("pay-form").hidden) $("card").focus();
    } else {
      fail(reply);
      if (reply.code === "sold_out") loadProduct();
      render();
    }
  }

  async function pay(event) {
    event.preventDefault();
    if (S.busy || !canAct() || !S.order) return;
    const card = $("card").value.replace(/[\s-]/g, "");
    if (!/^[0-9]{16}$/.test(card)) {
      S.notice = { key: "card_format", kind: "error" };
      render();
      $("card").focus();
      return;
    }
    S.busy = "pay";
    S.notice = null;
    render();
    const id = S.order.order_id;
    const reply = await call("POST", API + "/orders/" + id + "/pay", { card }, "pay:" + id);
    S.busy = null;
    if (reply.ok) {
      setOrder(reply.data);
      S.notice = { key: "paid_notice", vars: { id }, kind: "ok" };
      render();
    } else {
      fail(reply);
      if (reply.code === "conflict") refreshOrder();
      render();
      if (reply.code === "payment_declined") $("card").select();
    }
  }

  async function cancel() {
    if (S.busy || !canAct() || !S.order) return;
    S.busy = "cancel";
    S.notice = null;
    render();
    const id = S.order.order_id;
    const reply = await call("DELETE", API + "/orders/" + id, undefined, "cancel:" + id);
    S.busy = null;
    if (reply.ok) {
      setOrder(reply.data);
      loadProduct();
      $("buy").focus();
    } else {
      fail(reply);
      render();
    }
  }

  const canAct = () => S.entry && Date.now() >= S.waitUntil;

  function clock(ms) {
    const s = Math.max(0, Math.ceil(ms / 1000));
    const m = Math.floor(s / 60);
    return m + ":" + String(s % 60).padStart(2, "0");
  }

  function text(id, value) {
    const el = $(id);
    if (el.textContent !== value) el.textContent = value;
  }

  function render() {
    const p = S.product, o = S.order;
    const now = Date.now();
    if (now >= ACCESS_EXPIRES_MS && S.entry) {
      S.entry = false;
      if (!o || o.status !== "paid") S.notice = { key: "token_expired", kind: "error" };
    }
    if (p) {
      text("name", p.name);
      document.title = p.name;
      text("price", I.money(p.price, p.currency));
      text("stock", I.t("stock", { left: I.number(p.stock_left), total: I.number(p.stock_total) }));
      const most = Math.max(1, Math.min(p.per_user_limit || 1, p.stock_left || 1));
      const select = $("quantity");
      if (select.options.length !== most) {
        const chosen = Math.min(Number(select.value) || 1, most);
        select.replaceChildren(...Array.from({ length: most }, (_, i) => new Option(I.number(i + 1), i + 1)));
        select.value = String(chosen);
      }
      text("limit", I.t("limit", { n: I.number(p.per_user_limit || 1) }));
      const note = { paused: "state_paused", sold_out: "state_sold_out", closed: "state_closed",
                     scheduled: "state_closed", prequeue: "state_closed" }[p.state];
      $("sale-state").hidden = !note;
      if (note) text("sale-state", I.t(note));
    }
    const done = o && o.status === "paid";
    $("access").hidden = !S.entry || done;
    text("access", S.entry ? I.t("access", { time: I.time(ACCESS_EXPIRES_MS) }) : "");

    // Buying: until there is an order that still counts (a cancelled one does not).
    const live = o && o.status !== "cancelled";
    const open = p && (p.state === "open" || p.state === "paused") && p.stock_left > 0;
    $("buy-section").hidden = Boolean(live);
    $("buy").disabled = !open || S.busy !== null || !canAct();
    text("buy", I.t(S.busy === "buy" ? "buying" : "buy"));

    $("order-section").hidden = !o;
    if (o) {
      const status = $("order-status");
      status.dataset.status = o.status;
      text("order-status", I.t(o.status === "cancelled" ? "cancelled_" + (o.cancel_reason || "user") : o.status));
      text("order-id", o.order_id);
      text("order-quantity", I.number(o.quantity));
      const currency = p ? p.currency : "EUR";
      text("order-total", I.money(o.total, currency));
      const unpaid = o.status === "pending" || o.status === "placed";
      // Paying needs the access token too: when it ends before the hold, that is the deadline.
      const holdEnds = Date.parse(o.hold_expires_at);
      const ends = Math.min(holdEnds, ACCESS_EXPIRES_MS);
      const left = ends - now;
      $("hold").hidden = !unpaid;
      if (unpaid) {
        const which = ends < holdEnds ? "hold_access" : "hold";
        text("hold", left > 0 ? I.t(which, { left: clock(left), time: I.time(ends) }) : I.t("hold_over"));
      }
      $("pay-form").hidden = !unpaid;
      const stuck = S.busy !== null || !canAct() || left <= 0;
      $("pay").disabled = stuck;
      $("cancel").disabled = stuck;
      $("card").disabled = S.busy === "pay";
      text("pay", I.t(S.busy === "pay" ? "paying" : "pay", { total: I.money(o.total, currency) }));
      text("cancel", I.t(S.busy === "cancel" ? "cancelling" : "cancel"));
    }

    const n = S.notice;
    const notice = $("notice");
    notice.className = n ? n.kind : "";
    const vars = n && n.vars ? { ...n.vars, wait: I.duration(n.vars.waitS || 0) } : undefined;
    text("notice", n ? I.t(n.key, vars) : "");
    $("back").hidden = S.entry;
  }

  // init() calls back at once (and on every switch), before it returns: I is set there.
  let I = null;
  FS_I18N.init({ en, ko }, (api) => { I = api; render(); });

  // Four times a second (a 1 s timer drifts, and the countdown would stall or skip a second):
  // the hold's countdown, the access deadline, the end of a Retry-After.
  setInterval(() => {
    const o = S.order, now = Date.now();
    // A hold that ran out is cancelled by the shop's sweep, soon after: ask, now and then.
    if (S.entry && o && (o.status === "placed" || o.status === "pending") &&
        Date.parse(o.hold_expires_at) + 1500 <= now && now - S.holdAskedAt >= 5000) {
      S.holdAskedAt = now;
      refreshOrder();
    }
    render();
  }, 250);
  // The stock moves while the visitor looks: a read of the public product now and then.
  setInterval(() => { if (S.entry && !document.hidden) loadProduct(); }, 10000);

  $("buy-form").addEventListener("submit", buy);
  $("pay-form").addEventListener("submit", pay);
  $("cancel").addEventListener("click", cancel);

  (async () => {
    await loadProduct();
    let saved = null;
    try { saved = sessionStorage.getItem(STORE); } catch (_) { /* no storage: nothing saved */ }
    if (saved && /^o_[0-9a-f]{24}$/.test(saved)) {
      const reply = await call("GET", API + "/orders/" + saved);
      if (reply.ok) setOrder(reply.data);
      else remember(null);
    }
  })();
})();

// The waiting room's script: joins the line, follows the status at the pace the server sets
// (never sooner than poll_after_ms), and says what is happening in the visitor's language.
(() => {
  "use strict";
  const sale = JSON.parse(document.getElementById("fs-sale").textContent);
  const product = sale.product_id;
  const base = "/queue/" + product;
  const $ = (id) => document.getElementById(id);
  const ADMIT_PAUSE_MS = 2000; // the "your turn" moment before the page moves on by itself
  const BACKOFF_FIRST_MS = 1000;
  const BACKOFF_MAX_MS = 30000;
  const NOT_OPEN_RETRY_MS = 30000;

  const en = {
    brand: "Waiting room",
    doc_title: "Waiting room: {name}",
    joining: "Joining the line…",
    keep_open: "Keep this page open: it keeps your place. It asks for news only as often as the line moves, and reloading it gives no advantage.",
    countdown_label: "Starts in",
    progress_label: "Progress through the line",
    go_shop: "Go to the shop",
    leave: "Leave the line",
    rejoin: "Join the line again",
    prequeue_title: "The sale has not started yet",
    starts_at: "The sale starts at {time}, in {duration}.",
    starting_now: "The sale is starting now: the places are being drawn.",
    prequeue_random: "Everyone who is here before the start gets a random place when the sale opens, so there is no need to rush or to reload.",
    prequeue_number: ({ n }, t) => `You are number ${t.number(n)}.`,
    waiting_title: "You are in line",
    position: ({ n, total }, t) => `You are number <strong>${t.number(n)}</strong> of ${t.number(total)}.`,
    ahead: ({ n }, t) => n === 0 ? "You are next." : n === 1 ? "1 person is ahead of you." : `${t.number(n)} people are ahead of you.`,
    eta: "Expected wait: about {duration} (around {time}).",
    eta_unknown: "Your wait will be estimated as soon as the line starts moving.",
    paused_title: "Admissions are paused",
    paused_detail: "The organiser has paused admissions. You keep your place: keep this page open and it moves on by itself when admissions resume. The wait is unknown until then.",
    admitted_title: "It's your turn!",
    admitted_detail: "Taking you to the shop… Your access is valid until {time}. If nothing happens, use the button.",
    expired_title: "Your turn has passed",
    expired_detail: "You were let in, but did not reach the shop in time, so your access expired. You can join the line again, at the back.",
    sold_out_title: "Sold out",
    sold_out_in_line: "Every item has been sold, so nobody more is being let in. If an order is cancelled, items can come back: keep this page open to keep your place, or close it if you no longer wish to wait.",
    sold_out_no_place: "Every item has been sold, and the line is closed. There is nothing to wait for; thank you for coming.",
    closed_title: "The sale is closed",
    closed_detail: "This sale has ended, or the organiser cancelled it. There is nothing more to wait for: you can close this page.",
    lost_title: "You lost your place",
    lost_detail: "This page stopped asking for news for too long (a computer that went to sleep or a lost connection does that), so your place went to the people behind you. You can join again, at the back of the line.",
    gone_title: "You are no longer in line",
    gone_detail: "Your place was given up, perhaps in another tab. You can join again, at the back of the line.",
    left_title: "You left the line",
    left_detail: "Your place went to the people behind you. Changed your mind? You can join again, at the back.",
    not_open_title: "The waiting room is not open yet",
    not_open_detail: "The sale starts at {time}. The waiting room opens a while before that, and this page joins by itself: keep it open.",
    error_title: "Something went wrong",
    error_detail: "The waiting room could not be reached as expected. Reload this page in a moment.",
    retry_place: "Connection problem. Trying again in {duration}; your place is kept.",
    retry_join: "Connection problem. Trying again in {duration}.",
    busy_place: "Many people are arriving at once. Trying again in {duration}; your place is kept.",
    busy_join: "Many people are arriving at once. Trying again in {duration}.",
    fair_title: "How the draw works",
    fair_before: "At the start, everyone who is here gets a random place, drawn from a secret seed that was fixed before anyone joined. Its fingerprint (SHA-256) is shown now and the seed itself at the start, so anyone can check that nobody chose the order after seeing who came.",
    fair_after: "The seed is revealed. Each early visitor's draw is HMAC-SHA256(seed, visitor id), and the early visitors are placed in the order of their draws, smallest first.",
    commitment_label: "Fingerprint of the seed (SHA-256)",
    seed_label: "Seed (revealed at the start)",
    draw_label: "Your draw",
    late_joiner: "You joined after the start, so your place is in order of arrival.",
    check: "Check my draw",
    checking: "Checking…",
    check_ok: "✓ Checked in your browser: the seed matches the fingerprint shown before the start, and your draw is HMAC-SHA256(seed, your visitor id).",
    check_bad_commit: "✗ The seed does NOT match the fingerprint shown before the start.",
    check_bad_draw: "✗ Your draw does NOT match HMAC-SHA256(seed, your visitor id).",
    check_manual: "This browser cannot compute it on this connection (it needs HTTPS). Check it yourself: your draw = HMAC-SHA256(key = the seed's bytes, message = your visitor id {id}), for example with:",
  };

  const ko = {
    brand: "대기실",
    doc_title: "{name} 대기실",
    joining: "대기열에 들어가는 중…",
    keep_open: "이 페이지를 열어 두세요. 열려 있는 동안 자리가 유지됩니다. 줄이 움직이는 만큼만 새 소식을 확인하며, 새로고침해도 순서가 앞당겨지지 않습니다.",
    countdown_label: "시작까지",
    progress_label: "대기 진행률",
    go_shop: "쇼핑 페이지로 가기",
    leave: "줄에서 나가기",
    rejoin: "다시 줄 서기",
    prequeue_title: "아직 판매 시작 전입니다",
    starts_at: "판매는 {time}에 시작합니다. {duration} 남았습니다.",
    starting_now: "지금 판매가 시작되고 있습니다. 순서를 추첨하는 중입니다.",
    prequeue_random: "시작 전에 들어온 모든 분은 판매가 열릴 때 무작위로 순서를 받습니다. 서두르거나 새로고침하실 필요가 없습니다.",
    prequeue_number: ({ n }, t) => `대기 순서는 ${t.number(n)}번입니다.`,
    waiting_title: "대기 중입니다",
    position: ({ n, total }, t) => `전체 ${t.number(total)}명 중 <strong>${t.number(n)}</strong>번째입니다.`,
    ahead: ({ n }, t) => n === 0 ? "다음 차례입니다." : `앞에 ${t.number(n)}명이 있습니다.`,
    eta: "예상 대기 시간: 약 {duration} ({time}쯤).",
    eta_unknown: "줄이 움직이기 시작하면 예상 대기 시간을 알려 드립니다.",
    paused_title: "입장이 잠시 멈췄습니다",
    paused_detail: "운영자가 입장을 잠시 멈췄습니다. 자리는 그대로 유지됩니다. 이 페이지를 열어 두시면 입장이 다시 시작될 때 자동으로 이어집니다. 그때까지는 대기 시간을 알 수 없습니다.",
    admitted_title: "입장 차례입니다!",
    admitted_detail: "쇼핑 페이지로 이동합니다… 입장 권한은 {time}까지 유효합니다. 이동하지 않으면 버튼을 눌러 주세요.",
    expired_title: "입장 시간이 지났습니다",
    expired_detail: "입장 차례가 되었지만 제한 시간 안에 쇼핑 페이지에 들어가지 않아 입장 권한이 만료되었습니다. 다시 줄을 서실 수 있으며, 맨 뒤에 서게 됩니다.",
    sold_out_title: "품절되었습니다",
    sold_out_in_line: "모든 상품이 판매되어 더 이상 입장할 수 없습니다. 주문이 취소되면 상품이 다시 생길 수 있으니, 계속 기다리시려면 이 페이지를 열어 두시고 그렇지 않으면 닫으셔도 됩니다.",
    sold_out_no_place: "모든 상품이 판매되어 대기열이 닫혔습니다. 더 기다리실 필요가 없습니다. 찾아 주셔서 감사합니다.",
    closed_title: "판매가 종료되었습니다",
    closed_detail: "이 판매는 끝났거나 운영자가 취소했습니다. 더 기다리실 필요가 없으니 이 페이지를 닫으셔도 됩니다.",
    lost_title: "대기 순서를 잃었습니다",
    lost_detail: "이 페이지가 너무 오랫동안 새 소식을 확인하지 않아(컴퓨터 절전이나 연결 끊김 등) 자리가 뒷사람에게 넘어갔습니다. 다시 줄을 서실 수 있으며, 맨 뒤에 서게 됩니다.",
    gone_title: "대기열에 계시지 않습니다",
    gone_detail: "다른 탭 등에서 자리를 포기하셨을 수 있습니다. 다시 줄을 서실 수 있으며, 맨 뒤에 서게 됩니다.",
    left_title: "대기열에서 나왔습니다",
    left_detail: "자리는 뒷사람에게 넘어갔습니다. 마음이 바뀌셨다면 다시 줄을 서실 수 있으며, 맨 뒤에 서게 됩니다.",
    not_open_title: "대기실이 아직 열리지 않았습니다",
    not_open_detail: "판매는 {time}에 시작합니다. 대기실은 그보다 먼저 열리며, 이 페이지가 자동으로 줄을 서 드리니 열어 두세요.",
    error_title: "문제가 발생했습니다",
    error_detail: "대기실에 정상적으로 연결되지 않았습니다. 잠시 후 페이지를 새로고침해 주세요.",
    retry_place: "연결에 문제가 있습니다. {duration} 후 다시 시도합니다. 자리는 그대로 유지됩니다.",
    retry_join: "연결에 문제가 있습니다. {duration} 후 다시 시도합니다.",
    busy_place: "접속자가 많습니다. {duration} 후 다시 시도합니다. 자리는 그대로 유지됩니다.",
    busy_join: "접속자가 많습니다. {duration} 후 다시 시도합니다.",
    fair_title: "순서 추첨 방식",
    fair_before: "판매가 시작되면 그때까지 들어온 모든 분이 무작위로 순서를 받습니다. 추첨에 쓰이는 비밀 시드는 누구보다 먼저 정해졌고, 지금은 그 지문(SHA-256)이, 시작 후에는 시드 자체가 공개됩니다. 그래서 누가 왔는지 보고 순서를 정한 것이 아님을 누구나 확인할 수 있습니다.",
    fair_after: "시드가 공개되었습니다. 시작 전에 들어온 분의 추첨값은 HMAC-SHA256(시드, 방문자 ID)이며, 추첨값이 작은 순서대로 자리를 받았습니다.",
    commitment_label: "시드의 지문(SHA-256)",
    seed_label: "시드(시작 시 공개)",
    draw_label: "내 추첨값",
    late_joiner: "판매 시작 후에 들어오셔서 도착 순서대로 자리를 받으셨습니다.",
    check: "내 추첨 확인하기",
    checking: "확인하는 중…",
    check_ok: "✓ 브라우저에서 확인했습니다. 시드가 시작 전에 공개된 지문과 일치하고, 내 추첨값이 HMAC-SHA256(시드, 내 방문자 ID)와 같습니다.",
    check_bad_commit: "✗ 시드가 시작 전에 공개된 지문과 일치하지 않습니다.",
    check_bad_draw: "✗ 내 추첨값이 HMAC-SHA256(시드, 내 방문자 ID)와 일치하지 않습니다.",
    check_manual: "이 연결에서는 브라우저가 직접 계산할 수 없습니다(HTTPS 필요). 직접 확인해 보세요. 내 추첨값 = HMAC-SHA256(키 = 시드의 바이트, 메시지 = 내 방문자 ID {id}), 예를 들면 다음 명령으로:",
  };

  // What the page shows, kept apart from how: a language switch re-renders it all.
  // view.kind: joining | not_started | waiting | paused | admitted | expired | sold_out |
  //            closed | place_lost | gone | left | not_open | error
  let view = { kind: "joining" };
  let notice = null; // { key, ms }: the retry notice over whatever the view is
  let timer = null, tick = null, redirect = null;
  // `generation` grows when the visitor leaves or joins again: an answer to a request sent
  // before that (a poll in flight while "Leave" was clicked) is stale and must be ignored,
  // or a 401 for the freed ticket would look like a place given up elsewhere.
  let generation = 0;
  let hasPlace = false; // a ticket that holds a place: what "your place is kept" promises
  let failures = 0; // consecutive failed requests: the backoff's exponent
  let pollAfterMs = 0; // the last answer's poll_after_ms: no request goes out sooner
  let startsAt = null; // performance.now() of the start, from starts_in_s (no clock skew)
  let check = null; // the outcome of "check my draw": a dictionary key
  // The bar's start survives a reload of this tab (blocked storage only costs the bar that).
  const FIRST_KEY = "fs_first_" + product;
  const stored = {
    get() { try { return Number(sessionStorage.getItem(FIRST_KEY)) || null; } catch (_) { return null; } },
    set(n) { try { sessionStorage.setItem(FIRST_KEY, String(n)); } catch (_) { /* not kept */ } },
    clear() { try { sessionStorage.removeItem(FIRST_KEY); } catch (_) { /* nothing kept */ } },
  };
  let firstPosition = stored.get();

  // init() renders once itself, before it has returned the api that render() needs.
  let i18n = null;
  i18n = FS_I18N.init({ en, ko }, () => { if (i18n) render(); });

  function setText(el, text) { if (el.textContent !== text) el.textContent = text; }
  function setHTML(el, html) { if (el.innerHTML !== html) el.innerHTML = html; }
  const show = (el, on) => { el.hidden = !on; };

  function progress(pct) {
    show($("bar"), pct !== null);
    if (pct === null) return;
    $("progress").style.width = pct + "%";
    $("bar").setAttribute("aria-valuenow", String(Math.round(pct)));
  }

  function countdownText(seconds) {
    const s = Math.max(0, Math.ceil(seconds));
    const pad = (n) => String(n).padStart(2, "0");
    const h = Math.floor(s / 3600), m = Math.floor((s % 3600) / 60);
    return (h ? h + ":" + pad(m) : String(m)) + ":" + pad(s % 60);
  }

  function renderCountdown() {
    const on = view.kind === "not_started" && startsAt !== null;
    show($("countdown-box"), on && startsAt > performance.now());
    if (!on) return;
    const left = (startsAt - performance.now()) / 1000;
    setText($("countdown"), countdownText(left));
    $("countdown").setAttribute("datetime", "PT" + Math.max(0, Math.ceil(left)) + "S");
  }

  // A clock time alone is ambiguous more than half a day away: then the date too.
  const when = (iso) => Math.abs(new Date(iso) - Date.now()) > 12 * 3600e3
    ? i18n.dateTime(iso) : i18n.time(iso);

  function render() {
    const t = i18n.t.bind(i18n);
    const st = view.status || {};
    // A tab in the background still tells its place, or that the turn has come.
    const title = t("doc_title", { name: sale.name });
    document.title = view.kind === "admitted" ? t("admitted_title") + " · " + title
      : (view.kind === "waiting" || view.kind === "paused") && st.position
        ? "#" + i18n.number(st.position) + " · " + title : title;
    let headline = "", position = "", eta = "", detail = "";
    let bar = null;
    switch (view.kind) {
      case "joining": headline = t("joining"); break;
      case "not_started": {
        headline = t("prequeue_title");
        const left = startsAt === null ? 0 : (startsAt - performance.now()) / 1000;
        position = st.position ? t("prequeue_number", { n: st.position }) : "";
        eta = left >= 1 ? t("starts_at", { time: when(sale.starts_at), duration: i18n.duration(left) })
          : t("starting_now");
        detail = st.position ? "" : t("prequeue_random");
        break;
      }
      case "waiting": case "paused": {
        headline = t(view.kind === "paused" ? "paused_title" : "waiting_title");
        position = st.position == null ? ""
          : t("position", { n: st.position, total: st.waiting }) + " " + t("ahead", { n: st.position - 1 });
        if (view.kind === "paused") detail = t("paused_detail");
        else if (st.eta_s == null) eta = t("eta_unknown");
        else eta = t("eta", { duration: i18n.duration(st.eta_s), time: i18n.time(view.at + st.eta_s * 1000) });
        // The share of the line that was ahead of you on arrival and has gone since: 0 when
        // you arrive, full at your turn (a sliver stays, so that it reads as a bar).
        bar = st.position == null || !firstPosition ? null
          : Math.max(2, (100 * (firstPosition - st.position)) / firstPosition);
        break;
      }
      case "admitted":
        headline = t("admitted_title");
        detail = t("admitted_detail", { time: i18n.time(st.expires_at) });
        bar = 100;
        break;
      case "expired": headline = t("expired_title"); detail = t("expired_detail"); break;
      case "sold_out":
        headline = t("sold_out_title");
        detail = t(view.inLine ? "sold_out_in_line" : "sold_out_no_place");
        break;
      case "closed": headline = t("closed_title"); detail = t("closed_detail"); break;
      case "place_lost": headline = t("lost_title"); detail = t("lost_detail"); break;
      case "gone": headline = t("gone_title"); detail = t("gone_detail"); break;
      case "left": headline = t("left_title"); detail = t("left_detail"); break;
      case "not_open":
        headline = t("not_open_title");
        detail = t("not_open_detail", { time: when(sale.starts_at) });
        break;
      case "error": headline = t("error_title"); detail = t("error_detail"); break;
    }
    setText($("headline"), headline);
    setHTML($("position"), position); // the only HTML: <strong> around a formatted number
    setText($("eta"), eta);
    setText($("detail"), detail);
    progress(bar);
    renderCountdown();

    const inLine = ["waiting", "paused", "not_started"].includes(view.kind) ||
      (view.kind === "sold_out" && view.inLine);
    show($("leave"), inLine);
    show($("keep-open"), ["waiting", "paused", "not_started", "joining"].includes(view.kind));
    show($("rejoin"), ["expired", "place_lost", "gone", "left"].includes(view.kind));
    show($("shop"), view.kind === "admitted");
    show($("notice"), notice !== null);
    if (notice) {
      setText($("notice"), t(notice.key + (hasPlace ? "_place" : "_join"), { duration: i18n.duration(notice.ms / 1000) }));
    }
    renderFair(t);
  }

  // How the draw works: only in shuffle mode, from the moment the commitment is public.
  function renderFair(t) {
    const st = view.status || {};
    show($("fair"), Boolean(sale.shuffle_commitment));
    if (!sale.shuffle_commitment) return;
    setText($("fair-how"), t(sale.shuffle_seed ? "fair_after" : "fair_before"));
    setText($("commitment"), sale.shuffle_commitment);
    const seed = Boolean(sale.shuffle_seed);
    for (const id of ["seed-label", "seed-row"]) show($(id), seed);
    setText($("seed"), sale.shuffle_seed || "");
    const mine = seed && Boolean(st.draw);
    for (const id of ["draw-label", "draw-row"]) show($(id), mine);
    setText($("draw"), st.draw || "");
    show($("check"), mine);
    show($("late"), seed && !st.draw && ["waiting", "paused"].includes(view.kind));
    const result = $("check-result");
    if (!check) { setText(result, ""); return; }
    if (check === "check_manual") {
      result.replaceChildren();
      const p = document.createElement("p");
      p.textContent = t("check_manual", { id: st.visitor_id });
      const pre = document.createElement("pre");
      pre.textContent = `printf '%s' '${st.visitor_id}' | openssl dgst -sha256 -mac HMAC -macopt hexkey:${sale.shuffle_seed}`;
      result.append(p, pre);
      return;
    }
    result.className = check === "check_ok" ? "ok" : check === "checking" ? "" : "error";
    setText(result, t(check));
  }

  const hexToBytes = (hex) => new Uint8Array(hex.match(/../g).map((b) => parseInt(b, 16)));
  const bytesToHex = (buf) => Array.from(new Uint8Array(buf), (b) => b.toString(16).padStart(2, "0")).join("");

  async function checkDraw() {
    const st = view.status || {};
    if (!(window.crypto && crypto.subtle)) { check = "check_manual"; return render(); }
    check = "checking"; render();
    const seed = hexToBytes(sale.shuffle_seed);
    const commitment = bytesToHex(await crypto.subtle.digest("SHA-256", seed));
    const key = await crypto.subtle.importKey("raw", seed, { name: "HMAC", hash: "SHA-256" }, false, ["sign"]);
    const mine = bytesToHex(await crypto.subtle.sign("HMAC", key, new TextEncoder().encode(st.visitor_id)));
    check = commitment !== sale.shuffle_commitment ? "check_bad_commit"
      : mine !== st.draw ? "check_bad_draw" : "check_ok";
    render();
  }

  // --- Talking to the queue server ------------------------------------------------------

  function schedule(ms, next) {
    clearTimeout(timer);
    timer = setTimeout(next, ms);
  }

  function stop() {
    clearTimeout(timer);
    timer = null;
  }

  // After a failure: 1 s, 2 s, 4 s… up to 30 s, with jitter so that a line that lost the
  // network at once does not come back at once; never sooner than the server last asked,
  // nor than its Retry-After.
  function retry(next, key, retryAfterS) {
    failures += 1;
    const backoff = Math.min(BACKOFF_MAX_MS, BACKOFF_FIRST_MS * 2 ** (failures - 1));
    const ms = Math.max(pollAfterMs, backoff * (1 + Math.random() * 0.2), 1000 * (retryAfterS || 0));
    notice = { key, ms };
    render();
    schedule(ms, next);
  }

  async function call(method, path) {
    const res = await fetch(path, { method, credentials: "same-origin", cache: "no-store",
      headers: { Accept: "application/json" } });
    const body = res.status === 204 ? null : await res.json().catch(() => null);
    return { res, body };
  }

  const retryAfter = (res) => Number(res.headers.get("Retry-After")) || 0;

  function answered(st) {
    failures = 0;
    notice = null;
    hasPlace = true;
    pollAfterMs = Math.max(0, Number(st.poll_after_ms) || 0);
    const was = view.kind;
    view = { kind: st.state, status: st, at: Date.now(), inLine: true };
    if (st.state === "not_started") startsAt = performance.now() + 1000 * (st.starts_in_s || 0);
    if ((st.state === "waiting" || st.state === "paused") && st.position) {
      if (firstPosition === null || st.position > firstPosition) {
        firstPosition = st.position;
        stored.set(firstPosition);
      }
    }
    // The seed is revealed at the start: the page learns it once, from the public sale info.
    if (st.draw && !sale.shuffle_seed) refreshSale();
    switch (st.state) {
      case "admitted": return admitted(st);
      case "expired": case "closed": hasPlace = false; stop(); break;
      default:
        // waiting, paused, not_started, sold_out (stock may come back): keep the place.
        schedule(pollAfterMs, poll);
    }
    if (was !== view.kind && view.kind === "not_started") startTicking();
    render();
  }

  function admitted(st) {
    stop();
    const url = st.shop_page_url + "?token=" + encodeURIComponent(st.access_token);
    $("shop").href = url;
    render();
    clearTimeout(redirect);
    redirect = setTimeout(() => window.location.assign(url), ADMIT_PAUSE_MS);
  }

  function startTicking() {
    clearInterval(tick);
    tick = setInterval(() => {
      if (view.kind !== "not_started") { clearInterval(tick); return; }
      // The whole view, not only the clock: "in 5 minutes" must not go stale between polls.
      // Unchanged text is not rewritten, so the live region does not speak every tick.
      render();
    }, 250);
  }

  async function refreshSale() {
    try {
      const { res, body } = await call("GET", base);
      if (!res.ok || !body) return;
      Object.assign(sale, body);
      render();
    } catch (_) { /* the next answer with a draw asks again */ }
  }

  async function join() {
    const mine = generation;
    try {
      const { res, body } = await call("POST", base + "/join");
      if (mine !== generation) return;
      if (res.ok && body) return answered(body);
      if (res.status === 429 || res.status >= 500) return retry(join, "busy", retryAfter(res));
      failures = 0; notice = null;
      if (res.status === 403) {
        view = { kind: "not_open" };
        schedule(NOT_OPEN_RETRY_MS, join);
      } else if (res.status === 409) {
        await refreshSale();
        view = { kind: sale.state === "sold_out" ? "sold_out" : "closed", inLine: false };
      } else {
        view = { kind: res.status === 404 ? "closed" : "error" };
      }
      render();
    } catch (_) {
      if (mine === generation) retry(join, "retry");
    }
  }

  async function poll() {
    const mine = generation;
    try {
      const { res, body } = await call("GET", base + "/status");
      if (mine !== generation) return;
      if (res.ok && body) return answered(body);
      if (res.status === 429 || res.status >= 500) return retry(poll, "busy", retryAfter(res));
      failures = 0; notice = null; hasPlace = false; stop();
      if (res.status === 410) view = { kind: "place_lost" };
      else if (res.status === 401) view = { kind: "gone" };
      else if (res.status === 404) view = { kind: "closed" };
      else view = { kind: "error" };
      render();
    } catch (_) {
      if (mine === generation) retry(poll, "retry");
    }
  }

  $("leave").addEventListener("click", async () => {
    generation++; stop(); hasPlace = false; notice = null;
    view = { kind: "left" };
    stored.clear();
    render();
    $("rejoin").focus(); // the button that was pressed is gone: keep the keyboard in place
    await call("DELETE", base + "/ticket").catch(() => null);
  });

  $("rejoin").addEventListener("click", () => {
    generation++; firstPosition = null; failures = 0; check = null;
    stored.clear();
    view = { kind: "joining" };
    render();
    join();
  });

  $("check").addEventListener("click", () => {
    checkDraw().catch(() => { check = "check_manual"; render(); });
  });

  render();
  join();
})();

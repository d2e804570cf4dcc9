// The platform's pages speak Korean and English. Each page brings one dictionary per language
// and calls FS_I18N.init(); this file chooses the language, formats with Intl, and wires the
// visible switch. Served by every HTTP process at /assets/i18n.js (no other origin).
//
// The language, first found wins:
//   1. the visitor's own choice with the switch, remembered in localStorage ("fs_lang");
//   2. the server's reading of Accept-Language, in <html lang="..">;
//   3. English.
(() => {
  "use strict";
  const LANGS = ["ko", "en"];
  const STORE = "fs_lang";
  const LOCALES = { ko: "ko-KR", en: "en-US" };

  function remembered() {
    try { return localStorage.getItem(STORE); } catch (_) { return null; } // storage blocked
  }

  function choose() {
    const own = remembered();
    if (LANGS.includes(own)) return own;
    const served = (document.documentElement.lang || "").slice(0, 2);
    return LANGS.includes(served) ? served : "en";
  }

  function init(dictionaries, onChange) {
    let lang = choose();
    const api = {
      get lang() { return lang; },
      get locale() { return LOCALES[lang]; },
      // t("pos", {n: 3}) -> the string of key "pos" with {n} filled; a missing key shows as
      // itself, so a gap is visible rather than blank.
      t(key, vars) {
        const text = (dictionaries[lang] && dictionaries[lang][key]) ?? dictionaries.en[key] ?? key;
        return typeof text === "function" ? text(vars || {}, api) : String(text).replace(
          /\{(\w+)\}/g, (_, name) => (vars && name in vars ? vars[name] : "{" + name + "}"));
      },
      number(n) { return new Intl.NumberFormat(LOCALES[lang]).format(n); },
      // "3 minutes" / "3분": seconds below 90 in seconds, then minutes, then hours.
      duration(seconds) {
        const s = Math.max(0, Math.round(seconds));
        const [value, unit] = s < 90 ? [s, "second"] : s < 5400 ? [Math.round(s / 60), "minute"]
          : [Math.round(s / 360) / 10, "hour"];
        return new Intl.NumberFormat(LOCALES[lang], { style: "unit", unit, unitDisplay: "long" })
          .format(value);
      },
      // A clock time, in the visitor's time zone, in the chosen language's way.
      time(date) {
        return new Intl.DateTimeFormat(LOCALES[lang], { hour: "numeric", minute: "2-digit" })
          .format(new Date(date));
      },
      dateTime(date) {
        return new Intl.DateTimeFormat(LOCALES[lang], { dateStyle: "medium", timeStyle: "short" })
          .format(new Date(date));
      },
      // Prices travel in minor units (API.md): 12900 EUR is 129.00 €, 129000 KRW is ₩129,000.
      money(minor, currency) {
        const format = new Intl.NumberFormat(LOCALES[lang], { style: "currency", currency });
        const digits = format.resolvedOptions().maximumFractionDigits;
        return format.format(minor / 10 ** digits);
      },
      set(next) {
        if (!LANGS.includes(next)) return;
        lang = next;
        try { localStorage.setItem(STORE, next); } catch (_) { /* not remembered, still used */ }
        apply();
      },
    };

    // Every element with data-i18n="key" gets its text from the dictionary; the switch shows
    // the other language, in that language, so a visitor who cannot read this one finds it.
    function apply() {
      document.documentElement.lang = lang;
      for (const el of document.querySelectorAll("[data-i18n]")) el.textContent = api.t(el.dataset.i18n);
      for (const el of document.querySelectorAll("[data-i18n-label]")) {
        el.setAttribute("aria-label", api.t(el.dataset.i18nLabel));
      }
      const other = lang === "ko" ? "en" : "ko";
      for (const el of document.querySelectorAll("[data-lang-switch]")) {
        el.textContent = other === "ko" ? "한국어" : "English";
        el.setAttribute("lang", other);
        el.setAttribute("aria-label", other === "ko" ? "한국어로 보기" : "View in English");
      }
      if (onChange) onChange(api);
    }

    for (const el of document.querySelectorAll("[data-lang-switch]")) {
      el.addEventListener("click", () => api.set(lang === "ko" ? "en" : "ko"));
    }
    apply();
    return api;
  }

  window.FS_I18N = { init, LANGS };
})();

// Sign-in for the merchant portal, and authenticated calls to the public API.
//
// OAuth2 authorization code flow with PKCE (S256) as the public client "merchant-portal": no secret
// lives in the page. Tokens are kept in sessionStorage (they die with the tab and other tabs cannot
// read them). Refresh tokens rotate on every use and a reused one revokes the whole family, so one
// refresh at a time is ever in flight and the new refresh token always replaces the old one.
"use strict";

const PortalAuth = (() => {
  const TOKENS = "picool.portal.tokens";
  const PENDING = "picool.portal.pending";
  const REFRESH_EARLY_MS = 60_000; // refresh a minute before the access token expires
  let config = null;
  let refreshing = null; // the one in-flight refresh, shared by every caller
  let timer = null;

  class ApiError extends Error {
    // A problem+json answer (or an OAuth2 error): `code` is the stable machine-readable reason.
    constructor(status, body) {
      const detail = (body && (body.detail || body.error_description || body.title)) || `HTTP ${status}`;
      super(detail);
      this.status = status;
      this.code = (body && (body.code || body.error)) || "http_" + status;
      this.body = body;
    }
  }

  async function loadConfig() {
    if (!config) {
      const resp = await fetch("/portal/config.json", { credentials: "same-origin" });
      config = await resp.json();
    }
    return config;
  }

  function b64url(bytes) {
    let s = "";
    for (const b of bytes) s += String.fromCharCode(b);
    return btoa(s).replace(/\+/g, "-").replace(/\//g, "_").replace(/=+$/, "");
  }

  function randomToken(nBytes) {
    return b64url(crypto.getRandomValues(new Uint8Array(nBytes)));
  }

  // SHA-256 for the code challenge. Web Crypto exists only in secure contexts (https, or loopback
  // http); a portal opened over plain http on a LAN address uses the small implementation below.
  async function sha256(text) {
    const data = new TextEncoder().encode(text);
    if (window.crypto && crypto.subtle) return new Uint8Array(await crypto.subtle.digest("SHA-256", data));
    return sha256Fallback(data);
  }

  function sha256Fallback(data) {
    const K = new Uint32Array([
      0x428a2f98, 0x71374491, 0xb5c0fbcf, 0xe9b5dba5, 0x3956c25b, 0x59f111f1, 0x923f82a4, 0xab1c5ed5,
      0xd807aa98, 0x12835b01, 0x243185be, 0x550c7dc3, 0x72be5d74, 0x80deb1fe, 0x9bdc06a7, 0xc19bf174,
      0xe49b69c1, 0xefbe4786, 0x0fc19dc6, 0x240ca1cc, 0x2de92c6f, 0x4a7484aa, 0x5cb0a9dc, 0x76f988da,
      0x983e5152, 0xa831c66d, 0xb00327c8, 0xbf597fc7, 0xc6e00bf3, 0xd5a79147, 0x06ca6351, 0x14292967,
      0x27b70a85, 0x2e1b2138, 0x4d2c6dfc, 0x53380d13, 0x650a7354, 0x766a0abb, 0x81c2c92e, 0x92722c85,
      0xa2bfe8a1, 0xa81a664b, 0xc24b8b70, 0xc76c51a3, 0xd192e819, 0xd6990624, 0xf40e3585, 0x106aa070,
      0x19a4c116, 0x1e376c08, 0x2748774c, 0x34b0bcb5, 0x391c0cb3, 0x4ed8aa4a, 0x5b9cca4f, 0x682e6ff3,
      0x748f82ee, 0x78a5636f, 0x84c87814, 0x8cc70208, 0x90befffa, 0xa4506ceb, 0xbef9a3f7, 0xc67178f2,
    ]);
    const H = new Uint32Array([
      0x6a09e667, 0xbb67ae85, 0x3c6ef372, 0xa54ff53a, 0x510e527f, 0x9b05688c, 0x1f83d9ab, 0x5be0cd19,
    ]);
    const padded = new Uint8Array(((data.length + 9 + 63) >> 6) << 6);
    padded.set(data);
    padded[data.length] = 0x80;
    const bits = data.length * 8;
    const view = new DataView(padded.buffer);
    view.setUint32(padded.length - 8, Math.floor(bits / 2 ** 32));
    view.setUint32(padded.length - 4, bits >>> 0);
    const w = new Uint32Array(64);
    const rotr = (x, n) => (x >>> n) | (x << (32 - n));
    for (let off = 0; off < padded.length; off += 64) {
      for (let i = 0; i < 16; i++) w[i] = view.getUint32(off + i * 4);
      for (let i = 16; i < 64; i++) {
        const s0 = rotr(w[i - 15], 7) ^ rotr(w[i - 15], 18) ^ (w[i - 15] >>> 3);
        const s1 = rotr(w[i - 2], 17) ^ rotr(w[i - 2], 19) ^ (w[i - 2] >>> 10);
        w[i] = (w[i - 16] + s0 + w[i - 7] + s1) >>> 0;
      }
      let [a, b, c, d, e, f, g, h] = H;
      for (let i = 0; i < 64; i++) {
        const t1 = (h + (rotr(e, 6) ^ rotr(e, 11) ^ rotr(e, 25)) + ((e & f) ^ (~e & g)) + K[i] + w[i]) >>> 0;
        const t2 = ((rotr(a, 2) ^ rotr(a, 13) ^ rotr(a, 22)) + ((a & b) ^ (a & c) ^ (b & c))) >>> 0;
        h = g; g = f; f = e; e = (d + t1) >>> 0; d = c; c = b; b = a; a = (t1 + t2) >>> 0;
      }
      H[0] += a; H[1] += b; H[2] += c; H[3] += d; H[4] += e; H[5] += f; H[6] += g; H[7] += h;
    }
    const out = new Uint8Array(32);
    const outView = new DataView(out.buffer);
    H.forEach((v, i) => outView.setUint32(i * 4, v));
    return out;
  }

  function redirectUri() {
    return window.location.origin + "/portal/callback";
  }

  // Start the authorization code flow: remember the verifier and state for the callback, then go to
  // the authorization endpoint (which shows the SSO login page unless a session is already live).
  async function signIn() {
    const cfg = await loadConfig();
    const verifier = randomToken(48); // 64 characters, inside RFC 7636's 43..128
    const state = randomToken(24);
    const challenge = b64url(await sha256(verifier));
    sessionStorage.setItem(PENDING, JSON.stringify({ verifier, state }));
    const query = new URLSearchParams({
      response_type: "code",
      client_id: cfg.client_id,
      redirect_uri: redirectUri(),
      code_challenge: challenge,
      code_challenge_method: "S256",
      state,
      scope: cfg.scope,
    });
    window.location.assign("/oauth2/authorize?" + query.toString());
  }

  async function tokenRequest(fields) {
    const cfg = await loadConfig();
    const resp = await fetch("/oauth2/token", {
      method: "POST",
      headers: { "Content-Type": "application/x-www-form-urlencoded" },
      body: new URLSearchParams({ ...fields, client_id: cfg.client_id }),
      credentials: "same-origin",
    });
    const body = await resp.json().catch(() => null);
    if (!resp.ok) throw new ApiError(resp.status, body);
    return body;
  }

  // The callback half: check the state (CSRF on the redirect), then exchange code + verifier.
  async function completeSignIn(params) {
    const pending = JSON.parse(sessionStorage.getItem(PENDING) || "null");
    sessionStorage.removeItem(PENDING);
    if (params.get("error")) {
      throw new Error(params.get("error_description") || params.get("error"));
    }
    if (!pending || !params.get("state") || params.get("state") !== pending.state) {
      throw new Error("This sign-in answer does not belong to a sign-in started here. Please sign in again.");
    }
    const tokens = await tokenRequest({
      grant_type: "authorization_code",
      code: params.get("code") || "",
      redirect_uri: redirectUri(),
      code_verifier: pending.verifier,
    });
    store(tokens);
  }

  function saved() {
    return JSON.parse(sessionStorage.getItem(TOKENS) || "null");
  }

  function store(tokens) {
    const previous = saved();
    sessionStorage.setItem(
      TOKENS,
      JSON.stringify({
        access_token: tokens.access_token,
        // Rotation: the answer's refresh token replaces the one just used.
        refresh_token: tokens.refresh_token || (previous && previous.refresh_token) || null,
        expires_at: Date.now() + tokens.expires_in * 1000,
      }),
    );
    schedule();
  }

  function forget() {
    sessionStorage.removeItem(TOKENS);
    if (timer) clearTimeout(timer);
    timer = null;
  }

  function schedule() {
    if (timer) clearTimeout(timer);
    const t = saved();
    if (!t || !t.refresh_token) return;
    const wait = Math.max(5_000, t.expires_at - Date.now() - REFRESH_EARLY_MS);
    timer = setTimeout(() => refresh().catch(() => {}), wait);
  }

  function refresh() {
    if (!refreshing) {
      refreshing = (async () => {
        const t = saved();
        if (!t || !t.refresh_token) throw new ApiError(401, { error: "invalid_grant" });
        try {
          store(await tokenRequest({ grant_type: "refresh_token", refresh_token: t.refresh_token }));
        } catch (err) {
          if (err instanceof ApiError && err.status >= 400 && err.status < 500) forget();
          throw err;
        }
      })().finally(() => {
        refreshing = null;
      });
    }
    return refreshing;
  }

  async function accessToken() {
    let t = saved();
    if (!t) return null;
    if (t.expires_at - Date.now() < 5_000) {
      await refresh().catch(() => {});
      t = saved();
    }
    return t && t.access_token;
  }

  // One API call: JSON in and out, the bearer token attached, one refresh-and-retry on a 401.
  // Non-2xx answers throw ApiError carrying the problem's `code`.
  async function api(method, path, body) {
    for (let attempt = 0; attempt < 2; attempt++) {
      const token = await accessToken();
      if (!token) throw new ApiError(401, { code: "signed_out", detail: "You are signed out." });
      const headers = { Authorization: "Bearer " + token };
      if (body !== undefined) headers["Content-Type"] = "application/json";
      const resp = await fetch(path, {
        method,
        headers,
        body: body === undefined ? undefined : JSON.stringify(body),
        credentials: "same-origin",
      });
      if (resp.status === 401 && attempt === 0 && saved() && saved().refresh_token) {
        try {
          await refresh();
        } catch (err) {
          // The family is gone (revoked, expired, or a reused token was detected): signed out.
          throw new ApiError(401, { code: "signed_out", detail: "Your session ended. Please sign in again." });
        }
        continue;
      }
      const text = await resp.text();
      const parsed = text ? JSON.parse(text) : null;
      if (!resp.ok) throw new ApiError(resp.status, parsed);
      return parsed;
    }
    throw new ApiError(401, { code: "signed_out", detail: "You are signed out." });
  }

  // Revoke the refresh-token family and the SSO session, then forget the tokens.
  async function signOut() {
    const token = saved() && saved().access_token;
    if (token) {
      await fetch("/api/v1/auth/logout", {
        method: "POST",
        headers: { Authorization: "Bearer " + token },
        credentials: "same-origin",
      }).catch(() => {});
    }
    forget();
  }

  function signedIn() {
    return saved() !== null;
  }

  return { ApiError, loadConfig, signIn, completeSignIn, api, signOut, signedIn, schedule, refresh, sha256Fallback };
})();

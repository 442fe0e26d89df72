// The OAuth2 redirect URI of the portal: trade the authorization code for tokens, then go back to the app.
"use strict";

(async () => {
  try {
    await PortalAuth.loadConfig();
    await PortalAuth.completeSignIn(new URLSearchParams(window.location.search));
    // replace(): the code is single-use, so Back must not come here again.
    window.location.replace("/portal/");
  } catch (err) {
    document.getElementById("callback-title").textContent = "Sign-in failed";
    document.getElementById("callback-error").textContent = err.message || String(err);
    document.getElementById("callback-retry").hidden = false;
  }
})();

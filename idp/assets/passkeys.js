// Passkeys: runs the browser's WebAuthn ceremony for a form marked data-webauthn ("create" or
// "get"), puts what the authenticator answered into the form's hidden fields (base64url), and
// posts it. The IdP checks everything; this file only carries bytes.
"use strict";
(function () {
  function encode(buffer) {
    var text = "";
    new Uint8Array(buffer).forEach(function (b) { text += String.fromCharCode(b); });
    return btoa(text).replace(/\+/g, "-").replace(/\//g, "_").replace(/=+$/, "");
  }
  function decode(text) {
    var base64 = text.replace(/-/g, "+").replace(/_/g, "/");
    while (base64.length % 4) { base64 += "="; }
    return Uint8Array.from(atob(base64), function (c) { return c.charCodeAt(0); });
  }
  function credentials(list) {
    return (list || "").split(",").filter(Boolean).map(function (id) {
      return { type: "public-key", id: decode(id) };
    });
  }
  function set(form, name, value) { form.elements[name].value = value; }
  var algorithms = [-7, -8, -257].map(function (alg) { return { type: "public-key", alg: alg }; });

  function create(form) {
    var d = form.dataset;
    return navigator.credentials.create({ publicKey: {
      challenge: decode(d.challenge),
      rp: { id: d.rpId, name: "tokengate" },
      user: { id: decode(d.userId), name: d.userName, displayName: d.userName },
      pubKeyCredParams: algorithms,
      excludeCredentials: credentials(d.exclude),
      authenticatorSelection: { residentKey: "required", requireResidentKey: true, userVerification: "required" },
      attestation: "none",
      timeout: 120000
    } }).then(function (credential) {
      set(form, "client_data", encode(credential.response.clientDataJSON));
      set(form, "attestation", encode(credential.response.attestationObject));
    });
  }

  function get(form) {
    var d = form.dataset;
    return navigator.credentials.get({ publicKey: {
      challenge: decode(d.challenge),
      rpId: d.rpId,
      allowCredentials: credentials(d.allow),
      userVerification: d.uv,
      timeout: 120000
    } }).then(function (credential) {
      var response = credential.response;
      set(form, "credential", encode(credential.rawId));
      set(form, "client_data", encode(response.clientDataJSON));
      set(form, "authenticator_data", encode(response.authenticatorData));
      set(form, "signature", encode(response.signature));
      set(form, "user_handle", response.userHandle ? encode(response.userHandle) : "");
    });
  }

  document.querySelectorAll("form[data-webauthn]").forEach(function (form) {
    form.addEventListener("submit", function (event) {
      event.preventDefault();
      var ceremony = form.dataset.webauthn === "create" ? create(form) : get(form);
      ceremony.then(function () { form.submit(); }, function (error) {
        var shown = form.querySelector(".webauthn-error");
        shown.textContent = "The passkey did not answer (" + error.name + "). Try again, or use another way.";
        shown.hidden = false;
      });
    });
  });
})();

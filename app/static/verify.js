// The verification page: the token is in the link's fragment (never sent to a server, so never logged); the
// person's press of the button POSTs it. Loading the page confirms nothing.
(function () {
  "use strict";
  var token = window.location.hash.replace(/^#/, "");
  var button = document.getElementById("confirm");
  var status = document.getElementById("status");
  // Out of the address bar and the history at once: a shared screen or a copied address does not carry it.
  if (window.history && window.history.replaceState) {
    window.history.replaceState(null, "", window.location.pathname);
  }
  if (!/^[A-Za-z0-9_-]{20,100}$/.test(token)) {
    status.textContent = "This link is incomplete. Please open the whole link from the message we sent you.";
    return;
  }
  button.disabled = false;
  button.addEventListener("click", function () {
    button.disabled = true;
    status.textContent = "Confirming…";
    fetch("/v1/public/requests/verify", {
      method: "POST", headers: {"Content-Type": "application/json"}, body: JSON.stringify({token: token}),
      credentials: "omit", referrerPolicy: "no-referrer"
    }).then(function (response) {
      if (response.ok) {
        status.textContent = "Thank you: your request is confirmed. We will answer it within one month.";
      } else if (response.status === 404) {
        status.textContent = "This link has expired or was replaced by a newer one. Please ask us for a new link.";
      } else if (response.status === 409) {
        status.textContent = "This request is already closed.";
      } else {
        status.textContent = "We could not confirm your request just now. Please try again in a few minutes.";
        button.disabled = false;
      }
    }, function () {
      status.textContent = "We could not reach our service. Please check your connection and try again.";
      button.disabled = false;
    });
  });
})();

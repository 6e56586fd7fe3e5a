// The account part of the header, on every page: "Sign in" / "Sign up" for visitors, the e-mail, a link
// to the account page and "Sign out" for people signed in. On the marketplace, anonymous buyers are told
// that signing in keeps what they bought on every device.

import { api, request } from "./api.js";
import { headerMenu } from "./header.js";
import { h } from "./ui.js";

/** The signed-in account, or null (cached for the page's life). */
let current;
export function currentAccount() {
  if (current === undefined) {
    current = api("/api/auth/session")
      .then((body) => body.account)
      .catch(() => null);
  }
  return current;
}

export async function signOut() {
  await request("/api/auth/logout", { method: "POST" });
  window.location.assign("/");
}

async function renderMenu() {
  const header = headerMenu();
  if (!header || document.querySelector(".account-menu")) return;
  const menu = h("div", { class: "account-menu", role: "group", "aria-label": "Account" });
  header.append(menu);
  const account = await currentAccount();
  if (account) {
    const out = h("button", { type: "button", class: "button small ghost", id: "sign-out" }, "Sign out");
    out.addEventListener("click", () => signOut().catch(() => window.location.assign("/")));
    menu.append(
      h("a", { href: "/account", class: "account-link", id: "account-link", title: "Your account" }, account.email),
      out,
    );
  } else {
    menu.append(
      h("a", { href: "/account#sign-in", class: "button small ghost", id: "sign-in-link" }, "Sign in"),
      h("a", { href: "/account#sign-up", class: "button small primary", id: "sign-up-link" }, "Sign up"),
    );
    if (window.location.pathname === "/marketplace") await tellAnonymousBuyers();
  }
}

async function tellAnonymousBuyers() {
  const note = document.getElementById("account-note");
  if (!note) return;
  try {
    const { purchases } = await api("/api/purchases");
    if (!purchases.length) return;
  } catch {
    return;
  }
  note.replaceChildren(
    h("p", {}, h("a", { href: "/account#sign-up" }, "Sign in to keep your purchases on every device"),
      ": what this browser bought becomes your account's, usable from your phone, another browser or your tools."),
  );
  note.hidden = false;
}

renderMenu();

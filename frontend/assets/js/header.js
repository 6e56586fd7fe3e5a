// The site header on narrow screens: the navigation (and the account menu, account-menu.js) fold into a
// "Menu" button under 720 px. Without JavaScript the links stay where they are and simply wrap.

const header = document.querySelector(".site-header");
const wrap = header?.querySelector(".wrap");

/** The element the header's menus go into: the foldable part of the header. */
export function headerMenu() {
  return document.getElementById("site-menu") || wrap;
}

function fold() {
  if (!wrap || document.getElementById("site-menu")) return;
  const menu = document.createElement("div");
  menu.id = "site-menu";
  menu.className = "site-menu";
  const nav = wrap.querySelector(".nav");
  if (nav) menu.append(nav);
  const toggle = document.createElement("button");
  toggle.type = "button";
  toggle.className = "button small menu-toggle";
  toggle.setAttribute("aria-expanded", "false");
  toggle.setAttribute("aria-controls", "site-menu");
  toggle.innerHTML = '<svg viewBox="0 0 20 20" width="18" height="18" aria-hidden="true" focusable="false">'
    + '<path d="M3 5h14M3 10h14M3 15h14" stroke="currentColor" stroke-width="2" stroke-linecap="round"/></svg>';
  toggle.append(document.createTextNode("Menu"));
  const set = (open) => {
    header.classList.toggle("menu-open", open);
    toggle.setAttribute("aria-expanded", String(open));
  };
  toggle.addEventListener("click", () => set(!header.classList.contains("menu-open")));
  header.addEventListener("keydown", (e) => {
    if (e.key === "Escape" && header.classList.contains("menu-open")) {
      set(false);
      toggle.focus();
    }
  });
  wrap.append(toggle, menu);
  header.classList.add("has-menu");
}

fold();

// The landing page: the featured free model, with a one-click way to get it.

import { ApiError, getModels, purchase } from "./api.js";
import { chattable, specList } from "./models.js";
import { h, modelAnchor } from "./ui.js";

const box = document.getElementById("featured");

function done(...children) {
  box.classList.remove("skeleton");
  box.removeAttribute("aria-busy");
  box.replaceChildren(...children);
}

function showModel(model) {
  const message = h("p", { class: "card-message", role: "status" });
  const marketplaceUrl = `/marketplace#${modelAnchor(model.id)}`;
  let action;
  if (chattable(model)) {
    action = h("a", { class: "button primary large", href: `/chat?model=${encodeURIComponent(model.id)}` }, `Chat with ${model.name}`);
  } else if (model.owned) {
    action = h("a", { class: "button primary large", href: marketplaceUrl }, "See its install progress");
  } else {
    action = h("button", { type: "button", class: "button primary large" }, `Get ${model.name} free`);
    action.addEventListener("click", async () => {
      action.disabled = true;
      action.textContent = "Adding to your library…";
      message.className = "card-message";
      message.textContent = "";
      try {
        await purchase(model.id);
        window.location.assign(marketplaceUrl);
      } catch (err) {
        if (err instanceof ApiError && err.code === "already_owned") {
          window.location.assign(marketplaceUrl);
          return;
        }
        action.disabled = false;
        action.textContent = `Get ${model.name} free`;
        message.className = "card-message error";
        message.textContent = err.message;
      }
    });
  }
  done(
    h("div", { class: "stack" },
      h("ul", { class: "badges", "aria-label": "About this model" },
        h("li", { class: "badge featured" }, "Featured"), h("li", { class: "badge installed" }, "Free")),
      h("h3", {}, model.name),
      h("p", { class: "model-desc" }, model.description),
      specList(model)),
    h("div", { class: "actions" }, action,
      h("a", { class: "button", href: "/marketplace" }, "See every model"), message),
  );
}

async function main() {
  try {
    const { models } = await getModels();
    const free = models.filter((m) => m.free);
    const model = free.find((m) => m.featured) || free[0];
    if (model) showModel(model);
    else {
      done(h("div", { class: "stack" }, h("p", {}, "Every model in this studio is a paid one; browse them in the marketplace."),
        h("a", { class: "button primary", href: "/marketplace" }, "Browse the marketplace")));
    }
  } catch (err) {
    done(h("div", { class: "stack" },
      h("p", { class: "install-error" }, `Couldn't load the models: ${err.message}`),
      h("a", { class: "button", href: "/marketplace" }, "Open the marketplace")));
  }
}

main();

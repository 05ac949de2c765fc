// cfrec's page: search films, give stars, watch the recommendations update (POST /v1/recommend
// folds the ratings in as a new user), open a film to see its similar films. Plain JavaScript,
// served by the service itself: no CDN, works offline.
"use strict";

const state = {
  card: null,            // GET /v1/model
  ratings: new Map(),    // item id (as JSON value) -> {stars, record}
  searchSeq: 0,
  recsSeq: 0,
  similarSeq: 0,
  searchTimer: null,
};

const $ = (id) => document.getElementById(id);

// ------------------------------------------------------------------ HTTP
async function api(path, options) {
  let response;
  try {
    response = await fetch(path, options);
  } catch (err) {
    throw new Error("the service cannot be reached (" + err.message + ")");
  }
  let body = null;
  try {
    body = await response.json();
  } catch (err) {
    body = null;
  }
  if (!response.ok) {
    const e = body && body.error;
    throw new Error(e ? e.message : "HTTP " + response.status);
  }
  return body;
}

function showError(message) {
  const box = $("error");
  if (message) {
    box.textContent = message;
    box.hidden = false;
  } else {
    box.textContent = "";
    box.hidden = true;
  }
}

// ------------------------------------------------------------------ ratings <-> stars
// A ranking-only model (no predicted ratings) takes a new user's liked items alone: the page
// then offers "I like this" instead of stars, and posts {"items": [...]}.
const LIKED = 5;

function likesOnly() {
  return Boolean(state.card) && !state.card.predicts_ratings;
}

function starsToRating(stars) {
  const [lo, hi] = state.card.rating_scale;
  return lo + ((stars - 1) * (hi - lo)) / 4;
}

function keyOf(id) {
  return JSON.stringify(id);
}

function rate(record, stars) {
  const key = keyOf(record.id);
  const current = state.ratings.get(key);
  if (current && current.stars === stars) {
    state.ratings.delete(key);          // clicking the same star again removes the rating
  } else {
    state.ratings.set(key, { stars, record });
  }
  renderRatings();
  refreshStars();
  loadRecommendations();
}

function unrate(record) {
  state.ratings.delete(keyOf(record.id));
  renderRatings();
  refreshStars();
  loadRecommendations();
}

function refreshStars() {
  document.querySelectorAll(".item[data-key]").forEach((li) => {
    const r = state.ratings.get(li.dataset.key);
    const stars = r ? r.stars : 0;
    li.querySelectorAll(".stars button").forEach((b) => {
      b.classList.toggle("on", Number(b.dataset.stars) <= stars);
      b.setAttribute("aria-pressed", Number(b.dataset.stars) === stars ? "true" : "false");
    });
    const like = li.querySelector(".like");
    if (like) {
      like.classList.toggle("on", Boolean(r));
      like.setAttribute("aria-pressed", r ? "true" : "false");
    }
    const remove = li.querySelector(".remove");
    if (remove) remove.hidden = !r;
  });
}

// ------------------------------------------------------------------ rendering
function describe(record) {
  const parts = [];
  if (record.year) parts.push(String(record.year));
  if (record.genres && record.genres.length) parts.push(record.genres.join(", "));
  return parts.join(" \u00b7 ");
}

function displayTitle(record) {
  return record.title || "item " + record.id;
}

function itemElement(record, figures, options) {
  const li = $("item-template").content.firstElementChild.cloneNode(true);
  li.dataset.key = keyOf(record.id);
  li.dataset.id = String(record.id);
  const title = li.querySelector(".title");
  title.textContent = displayTitle(record);
  title.addEventListener("click", () => loadSimilar(record));
  li.querySelector(".meta").textContent = describe(record);
  li.querySelector(".figures").textContent = figures || "";
  li.querySelectorAll(".stars button").forEach((b) => {
    b.addEventListener("click", () => rate(record, Number(b.dataset.stars)));
  });
  const like = li.querySelector(".like");
  if (likesOnly()) {
    li.querySelector(".stars").hidden = true;
    like.hidden = false;
    like.addEventListener("click", () => rate(record, LIKED));  // a second click removes it
  } else {
    like.remove();
  }
  const remove = li.querySelector(".remove");
  if (options && options.removable) {
    remove.addEventListener("click", () => unrate(record));
  } else {
    remove.remove();
  }
  return li;
}

function fill(list, elements) {
  list.replaceChildren(...elements);
  refreshStars();
}

function renderRatings() {
  const items = [...state.ratings.values()].map(({ record }) =>
    itemElement(record, "", { removable: true }));
  fill($("ratings"), items);
  $("ratings-empty").hidden = items.length > 0;
  $("clear").hidden = items.length === 0;
}

function recFigures(item) {
  const parts = [];
  if (state.card.predicts_ratings && item.predicted_rating !== null) {
    parts.push("predicted " + item.predicted_rating.toFixed(1));
  } else {
    parts.push("score " + item.score.toFixed(3));
  }
  return parts.join(" ");
}

// ------------------------------------------------------------------ loading
async function loadModel() {
  const el = $("model");
  try {
    const card = await api("/v1/model");
    state.card = card;
    const scale = card.rating_scale.map((v) => Number(v).toString()).join("\u2013");
    const kind = card.predicts_ratings ? "predicts ratings " + scale : "ranks items (no predicted ratings)";
    el.textContent = card.model_class + " on " + (card.dataset || "its data") + ": " +
      card.n_items.toLocaleString() + " items, " + card.n_users.toLocaleString() + " users; " +
      kind + " \u00b7 version " + card.model_version;
    el.dataset.state = "ready";
    if (likesOnly()) {
      $("mine-title").textContent = "Items you like";
      $("ratings-empty").textContent = "None yet: press \u201cI like this\u201d on a few.";
      $("clear").textContent = "Clear all";
    }
    return true;
  } catch (err) {
    el.textContent = "The model could not be loaded.";
    el.dataset.state = "error";
    showError(err.message);
    return false;
  }
}

// Loads one list: marks it loading, awaits request(), and renders the body unless a newer load of
// the same list (counted by state[seqKey]) started meanwhile; a failure marks the list and shows
// the error.
async function loadList(seqKey, list, status, { loading, failed }, request, render) {
  const seq = ++state[seqKey];
  list.dataset.state = "loading";
  status.textContent = loading;
  try {
    const body = await request();
    if (seq !== state[seqKey]) return;  // a newer load replaced this one
    render(body);
    list.dataset.state = "ready";
    showError("");
  } catch (err) {
    if (seq !== state[seqKey]) return;
    list.dataset.state = "error";
    status.textContent = failed;
    showError(err.message);
  }
}

async function search(query) {
  const list = $("results");
  const status = $("results-status");
  const url = "/v1/items?limit=20" + (query ? "&q=" + encodeURIComponent(query) : "");
  const loading = query ? "Searching\u2026" : "Loading popular films\u2026";
  const messages = { loading, failed: "Search failed." };
  return loadList("searchSeq", list, status, messages, () => api(url), (body) => {
    fill(list, body.items.map((it) => itemElement(it, it.n_ratings.toLocaleString() + " ratings")));
    if (!query) {
      status.textContent = likesOnly() ? "Most-rated films: like a few, or search."
        : "Most-rated films: give stars to a few, or search.";
    } else if (body.total === 0) {
      status.textContent = "No title matches \u201c" + query + "\u201d.";
    } else {
      status.textContent = body.total + " match" + (body.total === 1 ? "" : "es") +
        (body.total > body.items.length ? ", showing " + body.items.length : "") + ".";
    }
    list.dataset.query = query;
  });
}

async function loadRecommendations() {
  const list = $("recs");
  const status = $("recs-status");
  const chosen = [...state.ratings.values()];
  const payload = likesOnly()
    ? { items: chosen.map(({ record }) => record.id), k: 10 }
    : { ratings: chosen.map(({ stars, record }) => ({ item: record.id, rating: starsToRating(stars) })), k: 10 };
  const request = () => api("/v1/recommend", {
    method: "POST",
    headers: { "Content-Type": "application/json" },
    body: JSON.stringify(payload),
  });
  const messages = { loading: "Updating\u2026", failed: "Recommendations could not be updated." };
  return loadList("recsSeq", list, status, messages, request, (body) => {
    fill(list, body.items.map((it) => itemElement(it, recFigures(it))));
    const n = body.n_ratings_used;
    status.textContent = body.cold_start
      ? "Popular with everyone: " + (likesOnly() ? "like" : "rate") + " films to personalise this list."
      : likesOnly()
        ? "From the " + n + " film" + (n === 1 ? "" : "s") + " you like."
        : "From your " + n + " rating" + (n === 1 ? "" : "s") +
          (state.card.predicts_ratings ? ", with the rating the model predicts you would give." : ".");
    list.dataset.version = String(Number(list.dataset.version) + 1);
  });
}

async function loadSimilar(record) {
  const panel = $("similar");
  const list = $("similar-list");
  const status = $("similar-status");
  panel.hidden = false;
  $("similar-title").textContent = "Similar to " + displayTitle(record);
  if (!state.card.has_similar) {
    ++state.similarSeq;  // a load still in flight must not fill the list
    fill(list, []);
    list.dataset.state = "ready";
    status.textContent = "This model has no item vectors to compare.";
    return;
  }
  const url = "/v1/similar/" + encodeURIComponent(String(record.id)) + "?k=10";
  const messages = { loading: "Loading\u2026", failed: "Similar films could not be loaded." };
  return loadList("similarSeq", list, status, messages, () => api(url), (body) => {
    fill(list, body.items.map((it) => itemElement(it, "cosine " + it.similarity.toFixed(2))));
    status.textContent = "";
  });
}

// ------------------------------------------------------------------ wiring
async function main() {
  const input = $("search");
  input.addEventListener("input", () => {
    clearTimeout(state.searchTimer);
    state.searchTimer = setTimeout(() => search(input.value.trim()), 200);
  });
  input.addEventListener("keydown", (ev) => {
    if (ev.key === "Enter") {
      clearTimeout(state.searchTimer);
      search(input.value.trim());
    }
  });
  $("clear").addEventListener("click", () => {
    state.ratings.clear();
    renderRatings();
    refreshStars();
    loadRecommendations();
  });
  $("similar-close").addEventListener("click", () => { $("similar").hidden = true; });
  if (!(await loadModel())) return;
  renderRatings();
  await Promise.all([search(""), loadRecommendations()]);
}

document.addEventListener("DOMContentLoaded", main);

// clickadapt web page: vanilla JavaScript and a canvas, no build step.
// Everything goes through the REST API documented at /docs.
"use strict";

(function () {
  const $ = (id) => document.getElementById(id);
  const CLIENT_KEY = "clickadapt-client-id";
  const DRAG_THRESHOLD_PX = 4;
  const ZOOM_STEP = 1.25;
  const FULL_WINDOW = { low: 0, high: 255 };

  function makeClientId() {
    let id = sessionStorage.getItem(CLIENT_KEY);
    if (!id) {
      const random = new Uint8Array(9);
      crypto.getRandomValues(random);
      id = "tab-" + Array.from(random, (b) => b.toString(16).padStart(2, "0")).join("");
      sessionStorage.setItem(CLIENT_KEY, id);
    }
    return id;
  }

  const token = new URLSearchParams(window.location.search).get("token");
  const state = {
    clientId: makeClientId(),
    info: null,
    images: [],
    shortNames: new Map(), // image id → { folder, file } shown in the list (see shortNames), kept with the list
    current: null, // image id
    view: null, // SessionView of the current image
    referenceRequest: 0, // the latest reference comparison asked for (older answers are dropped)
    volumeDiceRequest: 0, // the latest whole-volume comparison asked for (older answers are dropped)
    volumeDiceFor: null, // the image shown when the volume's Dice was last asked for
    referencePixels: null, // per slice of the open volume, the pixels its reference marks (null: no reference)
    listScrolledTo: null, // the image the list last scrolled to (see renderList)
    classIndex: 1,
    redo: [], // what Undo took back on this image, the latest last: { click: [row, col, label] } or { stroke }
    strokesSent: [], // this image's brush strokes sent from this tab ({ points, radius, label }), for redoing one
    opacity: 0.5,
    showOverlay: true,
    outline: false, // the mask drawn as its outline only (key L), the anatomy under it left uncovered
    outlines: new WeakMap(), // overlay image → { thickness, canvas }: its outline, kept while the thickness holds
    showReference: false, // the reference mask's outline drawn too (key G), where the data folder has one
    referenceOverlay: null, // HTMLImageElement of the current image's reference.png (loaded when first shown)
    picture: null, // HTMLImageElement of display.png: the model's grid, whose pixels clicks and strokes are given in
    sharp: null, // HTMLImageElement of …/picture, drawn over display.png's extent: a photograph at its own resolution
    window: { low: 0, high: 255 }, // display contrast: grey values low … high of display.png shown black … white
    windowed: null, // { picture, low, high, canvas }: the picture through the window, kept until one of them changes
    overlay: null, // HTMLImageElement of the mask overlay (at the source image's resolution, see draw())
    zoom: 1, // screen pixels per grid column (per grid row: zoom × aspect)
    panX: 0,
    panY: 0,
    volume: null, // SourceInfo of the volume shown in the slice panel
    queue: Promise.resolve(),
    tool: "click", // click, brush, eraser or crop
    brushRadius: 4,
    busy: "", // what the page waits for ("segmenting…", "adapting…"); empty when idle
    finishing: false,
  };
  window.clickadapt = { state }; // for debugging and the end-to-end test

  // ------------------------------------------------------------------ API
  async function api(method, path, body, rawBody) {
    const headers = { "X-Client-Id": state.clientId };
    if (token) headers["Authorization"] = "Bearer " + token;
    const options = { method, headers };
    if (rawBody !== undefined) {
      headers["Content-Type"] = "application/octet-stream";
      options.body = rawBody;
    } else if (body !== undefined) {
      headers["Content-Type"] = "application/json";
      options.body = JSON.stringify(body);
    }
    const response = await fetch(path, options);
    const text = await response.text();
    let data = null;
    try { data = text ? JSON.parse(text) : null; } catch (_error) { data = text; }
    if (!response.ok) {
      let detail = data && data.detail !== undefined ? data.detail : text;
      if (Array.isArray(detail)) detail = detail.map((d) => d.msg || JSON.stringify(d)).join("; ");
      const error = new Error(humanise(response.status, String(detail)));
      error.status = response.status;
      error.detail = String(detail);
      throw error;
    }
    return data;
  }

  // Server messages are written for API users; say the same to a person without status codes or flags.
  function humanise(status, detail) {
    if (status === 409 && /is finished|already finished/.test(detail)) {
      return "This image is finished and its label is kept. Press Relabel to label it again.";
    }
    if (status === 409 && /another browser session/.test(detail)) {
      return detail.replace(/ You can also take it over here \(take_over=true\)\./, "");
    }
    if (status === 409 && /has no click/.test(detail)) return "Click on the image first.";
    if (status === 413) return "The file is too large for this server: " + detail;
    if (status >= 500) return "The server had a problem; please try again (" + status + ").";
    return detail;
  }

  function setBusy(text) {
    state.busy = text || "";
    $("busy").hidden = !state.busy;
    $("busy-text").textContent = state.busy;
    document.body.dataset.busy = state.busy ? "true" : "false";
    updateButtons();
    renderModelState();
  }

  function updateButtons() {
    const view = state.view;
    const open = Boolean(view) && view.state !== "done";
    const hasClicks = open && view.clicks.length > 0;
    const blocked = state.finishing;
    $("undo").disabled = blocked || !hasClicks;
    $("reset").disabled = blocked || !hasClicks;
    $("finish").disabled = blocked || !hasClicks;
    $("rollback").disabled = blocked;
    $("next").disabled = blocked;
  }

  // A confirmation with a way back: resolves true on OK, false on Cancel or Escape. Enter presses the focused
  // button: OK when `enterConfirms` (finish: F then Enter labels fast), else Cancel (what loses work).
  function confirmAction(text, okLabel, enterConfirms = false) {
    const dialog = $("confirm-dialog");
    $("confirm-text").textContent = text;
    $("confirm-ok").textContent = okLabel || "OK";
    return new Promise((resolve) => {
      dialog.returnValue = "cancel";
      dialog.addEventListener("close", () => resolve(dialog.returnValue === "ok"), { once: true });
      dialog.showModal();
      $(enterConfirms ? "confirm-ok" : "confirm-cancel").focus();
    });
  }

  function plural(count, noun) {
    return `${count} ${noun}${count === 1 ? "" : "s"}`;
  }

  function withToken(url) {
    return token ? url + (url.includes("?") ? "&" : "?") + "token=" + encodeURIComponent(token) : url;
  }

  function say(text, isError) {
    const element = $("message");
    element.textContent = text || "";
    element.classList.toggle("error", Boolean(isError));
  }

  // Serialise user actions: clicks are sent in the order they were made.
  function enqueue(action) {
    state.queue = state.queue.then(action).catch((error) => say(error.message, true));
    return state.queue;
  }

  // ------------------------------------------------------------------ image list
  const NAME_TAIL = 12; // characters of a long image name always shown at its end

  // Data-folder images are listed by the shortest end of their path that tells them apart: the file name
  // when it is unique (TCGA_CS_4941_19960909_11.webp), with as many folders as it takes when it is not
  // (p1/flair.nii.gz, p2/flair.nii.gz; "…/" marks folders left out above them). The full path is the
  // entry's tooltip, and the filter searches it.
  function shortNames(images) {
    const names = new Map();
    const parts = new Map();
    for (const image of images) {
      if (image.origin === "data" && image.name.includes("/")) parts.set(image.id, image.name.split("/"));
      else names.set(image.id, { folder: "", file: image.name });
    }
    let pending = [...parts.keys()];
    for (let depth = 1; pending.length; depth += 1) {
      const ends = new Map();
      const counts = new Map();
      for (const id of pending) {
        const end = parts.get(id).slice(-depth).join("/");
        ends.set(id, end);
        counts.set(end, (counts.get(end) || 0) + 1);
      }
      const next = [];
      for (const id of pending) {
        const all = parts.get(id);
        if (counts.get(ends.get(id)) === 1 || depth >= all.length) {
          const folders = all.slice(-depth, -1).join("/");
          names.set(id, {
            folder: folders ? (depth < all.length ? "…/" : "") + folders + "/" : "",
            file: all[all.length - 1],
          });
        } else next.push(id);
      }
      pending = next;
    }
    return names;
  }

  // One entry of the image list.
  function listItem(image) {
    const item = document.createElement("li");
    item.dataset.imageId = image.id;
    item.dataset.status = image.status;
    item.className = image.id === state.current ? "current" : "";
    const name = document.createElement("span");
    name.className = "name";
    name.title = image.name;
    const { folder, file } = state.shortNames.get(image.id);
    if (folder) {
      // Cut from its start when space is short ("…pat0001_1/"): the folder's end tells series apart.
      const prefix = document.createElement("span");
      prefix.className = "folder";
      prefix.dir = "rtl";
      const text = document.createElement("bdi");
      text.dir = "ltr";
      text.textContent = folder;
      prefix.append(text);
      name.append(prefix);
    }
    // Names of one series often differ only at the end (…_12.webp, …/patient07/60): a narrow list cuts the
    // middle and keeps the end in view, however short the name.
    const cut = Math.max(0, file.length - NAME_TAIL);
    const head = document.createElement("span");
    head.className = "head";
    head.textContent = file.slice(0, cut);
    const tail = document.createElement("span");
    tail.className = "tail";
    tail.textContent = file.slice(cut);
    name.append(head, tail);
    const badge = document.createElement("span");
    badge.className = "badge " + image.status;
    const label = { new: "new", in_progress: "in progress", done: "done" }[image.status];
    badge.textContent = image.status === "new" ? label : `${label} · ${image.clicks}`;
    item.append(name, badge);
    item.addEventListener("click", () => enqueue(() => openImage(image.id)));
    return item;
  }

  function listFilter() {
    return $("image-filter").value.trim().toLowerCase();
  }

  // The progress line over the list, the current image in view, the open volume's slice map.
  function afterListChange(shown) {
    const done = state.images.filter((image) => image.status === "done").length;
    const showing = listFilter() ? ` · ${shown} shown` : "";
    $("progress").textContent = `${done} / ${state.images.length} done${showing}`;
    if (state.current !== state.listScrolledTo) showCurrentInList();
    drawSliceMap(); // the open volume's slices follow their images' status
  }

  function renderList() {
    const list = $("image-list");
    const filter = listFilter();
    const shown = state.images.filter((image) => !filter || image.name.toLowerCase().includes(filter));
    list.replaceChildren(...shown.map(listItem));
    afterListChange(shown.length);
  }

  async function refreshList() {
    state.images = await api("GET", "/api/images");
    state.shortNames = shortNames(state.images);
    renderList();
  }

  // A newly opened image (also by Next or , .) is brought into the list's view; later re-renders leave the list
  // where the user scrolled it. When the list's height changes (the volume panel below it appears or grows), the
  // image brought into view is kept there.
  function showCurrentInList() {
    const item = $("image-list").querySelector("li.current");
    if (!item) return;
    item.scrollIntoView({ block: "nearest" });
    state.listScrolledTo = state.current;
  }
  new ResizeObserver(() => { if (state.listScrolledTo === state.current) showCurrentInList(); }).observe($("image-list"));

  // After each answer: only the image's own entry is made again (a full list of 1,243 LGG pictures took 60-90 ms to
  // build, after every click), and the current entry marked; a new image re-renders the list.
  function updateListEntry(image) {
    const index = state.images.findIndex((item) => item.id === image.id);
    const list = $("image-list");
    const entry = list.querySelector(`li[data-image-id="${CSS.escape(image.id)}"]`);
    const filter = listFilter();
    if (index < 0) {
      state.images.push(image);
      state.shortNames = shortNames(state.images); // a new name can change how the others are told apart
      renderList();
      return;
    }
    if (!entry && (!filter || image.name.toLowerCase().includes(filter))) {
      state.images[index] = image;
      renderList();
      return;
    }
    state.images[index] = image;
    if (entry) entry.replaceWith(listItem(image));
    for (const item of list.querySelectorAll("li.current")) item.classList.remove("current");
    const current = list.querySelector(`li[data-image-id="${CSS.escape(state.current || "")}"]`);
    if (current) current.classList.add("current");
    afterListChange(list.children.length);
  }

  // ------------------------------------------------------------------ model panel and chart
  function renderModel(model) {
    state.model = model;
    $("model-version").textContent = model.version;
    $("saved-version").textContent = "v" + model.saved_version;
    $("saved-count").textContent = String(model.versions.length);
    renderModelState();
    $("adaptation").checked = model.adaptation;
    const strategy = $("strategy");
    if (strategy.options.length !== model.strategies.length) {
      strategy.textContent = "";
      for (const name of model.strategies) strategy.append(new Option(name, name));
    }
    strategy.value = model.strategy;
    strategy.disabled = !model.adaptation;
    const versions = $("version-select");
    const picked = versions.dataset.picked;
    versions.textContent = "";
    for (const version of model.versions.slice().reverse()) {
      // Short enough for the panel: the time (local) for today's versions, the date for older ones.
      const created = new Date(version.created);
      const today = created.toDateString() === new Date().toDateString();
      const when = Number.isNaN(created.getTime())
        ? version.created
        : today
          ? created.toLocaleTimeString([], { hour: "2-digit", minute: "2-digit" })
          : created.toLocaleDateString();
      const option = new Option(`v${version.version} · ${version.kind} · ${when}`, String(version.version));
      option.title = `saved ${Number.isNaN(created.getTime()) ? version.created : created.toLocaleString()}`;
      versions.append(option);
    }
    if (picked && model.versions.some((v) => String(v.version) === picked)) versions.value = picked;
    const events = model.safety_events || [];
    const status = $("safety-status");
    const domains = (model.source_domains || []).length ? `source domain kept (${model.source_domains.join(", ")})` : "";
    const copyEvents = (model.source_copy_events || []).length;
    const copies = copyEvents ? `${copyEvents} update(s) rejected on source-domain images` : "";
    const extras = [model.source_sentinel && "source sentinel", model.source_rehearsal && "source rehearsal", domains, copies].filter(Boolean);
    const guard = extras.length ? `Safety layer on (with ${extras.join(" and ")})` : "Safety layer on";
    if (events.length) {
      const last = events[events.length - 1];
      status.textContent = `${guard}: ${events.length} action(s); latest ${last.kind.replace("_", " ")} at v${last.version}.`;
      status.title = last.reason;
    } else {
      status.textContent = `${guard}: no action needed so far.`;
      status.title = "";
    }
  }

  function renderModelState() {
    const model = state.model;
    let text = "up to date";
    if (state.busy === "adapting the model to this image…" || state.busy === "segmenting…") text = "adapting…";
    else if (model && !model.adaptation) text = "frozen (not adapting)";
    else if (model && model.version !== model.saved_version) text = "learned from your clicks (saved when you finish)";
    $("model-state").textContent = text;
  }

  async function refreshModel() {
    renderModel(await api("GET", "/api/model"));
  }

  async function refreshChart() {
    const points = await api("GET", "/api/stats/chart");
    const canvas = $("chart");
    const context = canvas.getContext("2d");
    const width = canvas.width;
    const height = canvas.height;
    context.clearRect(0, 0, width, height);
    context.font = "10px system-ui, sans-serif";
    context.fillStyle = "#9aa2ad";
    if (!points.length) {
      context.fillText("no finished image yet", 8, height / 2);
      return;
    }
    const maxClicks = Math.max(...points.map((p) => p.clicks), 1);
    const left = 22;
    const bottom = height - 14;
    const top = 8;
    const barWidth = Math.max(2, Math.min(24, (width - left - 4) / points.length - 2));
    context.fillText(String(maxClicks), 2, top + 8);
    context.fillText("0", 8, bottom);
    points.forEach((point, index) => {
      const x = left + index * (barWidth + 2);
      const barHeight = ((bottom - top) * point.clicks) / maxClicks;
      context.fillStyle = "#4f9dff";
      context.fillRect(x, bottom - barHeight, barWidth, barHeight);
    });
    context.fillStyle = "#9aa2ad";
    const lastClicks = points[points.length - 1].clicks;
    const caption = `${plural(points.length, "image")}, last ${plural(lastClicks, "click")}`;
    context.fillText(caption, left, height - 2);
  }

  // ------------------------------------------------------------------ viewer
  const canvas = $("canvas");
  const context = canvas.getContext("2d");

  function resizeCanvas() {
    const ratio = window.devicePixelRatio || 1;
    const rect = canvas.getBoundingClientRect();
    canvas.width = Math.max(1, Math.round(rect.width * ratio));
    canvas.height = Math.max(1, Math.round(rect.height * ratio));
    context.setTransform(ratio, 0, 0, ratio, 0, 0);
  }

  // Screen height of a grid row / screen width of a grid column: the photograph's own aspect over the grid's (a
  // 4:3 photograph on a square grid: 0.75); 1 for a grey slice, whose picture is the grid.
  function aspect() {
    const { picture, sharp } = state;
    return sharp ? (sharp.naturalHeight * picture.naturalWidth) / (sharp.naturalWidth * picture.naturalHeight) : 1;
  }

  function zoomY() {
    return state.zoom * aspect();
  }

  // Where the centre of grid pixel (row, col) is on the canvas, in CSS pixels.
  function screenPoint(row, col) {
    return { x: state.panX + (col + 0.5) * state.zoom, y: state.panY + (row + 0.5) * zoomY() };
  }
  window.clickadapt.screenPoint = screenPoint;

  function fit() {
    if (!state.picture) return;
    const rect = canvas.getBoundingClientRect();
    const width = state.picture.naturalWidth;
    const height = state.picture.naturalHeight * aspect(); // in screen units of a grid column
    state.zoom = Math.min(rect.width / width, rect.height / height) * 0.95;
    state.panX = (rect.width - width * state.zoom) / 2;
    state.panY = (rect.height - height * state.zoom) / 2;
    draw();
  }

  function classColour(index) {
    const colours = state.info ? state.info.class_colours : [];
    const colour = colours[index] || [255, 255, 255];
    return `rgb(${colour[0]}, ${colour[1]}, ${colour[2]})`;
  }

  function drawStroke(points) {
    draw();
    context.save();
    context.globalAlpha = 0.6;
    context.fillStyle = state.tool === "eraser" ? "#ffffff" : classColour(state.classIndex);
    for (const [row, col] of points) {
      context.beginPath();
      const { x, y } = screenPoint(row, col);
      context.ellipse(x, y, state.brushRadius * state.zoom, state.brushRadius * zoomY(), 0, 0, 2 * Math.PI);
      context.fill();
    }
    context.restore();
  }

  function drawBox(box) {
    draw();
    const [[r0, c0], [r1, c1]] = box;
    context.save();
    context.setLineDash([6, 4]);
    context.lineWidth = 2;
    context.strokeStyle = "#ffd200";
    const x = state.panX + Math.min(c0, c1) * state.zoom;
    const y = state.panY + Math.min(r0, r1) * zoomY();
    context.strokeRect(x, y, (Math.abs(c1 - c0) + 1) * state.zoom, (Math.abs(r1 - r0) + 1) * zoomY());
    context.restore();
  }

  function selectTool(tool) {
    state.tool = tool;
    const input = document.querySelector(`#tool-picker input[value="${tool}"]`);
    if (input) input.checked = true;
    canvas.dataset.tool = tool;
  }

  // ------------------------------------------------------------------ display contrast (window / level)
  // Shift + drag changes how display.png is shown (left / right: contrast, up / down: brightness); W restores it.
  // Only the screen changes: the model, the masks, the exports and the datastore see the image as it is.
  function isFullWindow(range) {
    return range.low === FULL_WINDOW.low && range.high === FULL_WINDOW.high;
  }

  // A canvas holding a copy of an image at its own size, and its context (to read and change the pixels).
  function offscreenCopy(image) {
    const canvas = document.createElement("canvas");
    canvas.width = image.naturalWidth;
    canvas.height = image.naturalHeight;
    const context = canvas.getContext("2d", { willReadFrequently: true });
    context.drawImage(image, 0, 0);
    return { canvas, context };
  }

  function shownPicture() {
    const { low, high } = state.window;
    const picture = state.sharp || state.picture;
    if (!picture || isFullWindow(state.window)) return picture;
    const cached = state.windowed;
    if (cached && cached.picture === picture && cached.low === low && cached.high === high) return cached.canvas;
    const { canvas: offscreen, context: offscreenContext } = offscreenCopy(picture);
    const pixels = offscreenContext.getImageData(0, 0, offscreen.width, offscreen.height);
    const table = new Uint8ClampedArray(256); // clamps to 0 … 255 and rounds
    for (let value = 0; value < 256; value++) table[value] = ((value - low) * 255) / (high - low);
    const data = pixels.data;
    for (let i = 0; i < data.length; i += 4) {
      data[i] = table[data[i]];
      data[i + 1] = table[data[i + 1]];
      data[i + 2] = table[data[i + 2]];
    }
    offscreenContext.putImageData(pixels, 0, 0);
    state.windowed = { picture, low, high, canvas: offscreen };
    return offscreen;
  }

  function setWindow(low, high) {
    state.window = { low: Math.round(low), high: Math.round(high) };
    const full = isFullWindow(state.window);
    $("window-item").hidden = full;
    $("window-value").textContent = full ? "" : `${state.window.low}–${state.window.high}`;
    // The slice preview through the same window (an SVG filter: the same linear map, clamped to 0 … 1).
    const { low: from, high: to } = state.window;
    for (const func of document.querySelectorAll(".window-func")) {
      func.setAttribute("slope", String(255 / (to - from)));
      func.setAttribute("intercept", String(-from / (to - from)));
    }
    $("slice-preview").style.filter = full ? "" : "url(#window-filter)";
    draw();
  }

  function dragWindow(start, dx, dy) {
    // right: a narrower window (more contrast); up: a lower centre (brighter). One screen pixel, one grey level.
    const width = Math.max(2, Math.min(1024, start.high - start.low - dx));
    const centre = Math.max(-255, Math.min(510, (start.low + start.high) / 2 + dy));
    setWindow(centre - width / 2, centre + width / 2);
  }

  function draw() {
    const rect = canvas.getBoundingClientRect();
    context.save();
    context.setTransform(window.devicePixelRatio || 1, 0, 0, window.devicePixelRatio || 1, 0, 0);
    context.clearRect(0, 0, rect.width, rect.height);
    $("empty-hint").hidden = Boolean(state.picture);
    if (!state.picture) {
      context.restore();
      return;
    }
    // Grid pixels (display.png's) are the drawing units. A photograph's own picture (state.sharp) is stretched over
    // them, smoothed; the grid picture of a grey slice is drawn pixel by pixel, as the model sees it.
    const width = state.picture.naturalWidth;
    const height = state.picture.naturalHeight;
    context.imageSmoothingEnabled = Boolean(state.sharp);
    context.translate(state.panX, state.panY);
    context.scale(state.zoom, zoomY());
    context.drawImage(shownPicture(), 0, 0, width, height);
    // Overlays come at the source image's own resolution (finer than display.png for a resized photograph):
    // stretched over the picture's extent, smoothed only when scaled down; an outline is about 2 screen pixels wide
    // at any zoom, whatever the overlay's own resolution.
    const screenWidth = width * state.zoom * (window.devicePixelRatio || 1);
    const drawOutline = (overlay) => {
      context.imageSmoothingEnabled = overlay.naturalWidth > screenWidth;
      const thickness = Math.max(1, Math.round((2 * overlay.naturalWidth) / screenWidth));
      context.drawImage(outlineOf(overlay, thickness), 0, 0, width, height);
    };
    if (state.overlay && state.showOverlay) {
      context.imageSmoothingEnabled = state.overlay.naturalWidth > screenWidth;
      if (state.outline) {
        drawOutline(state.overlay);
      } else {
        context.globalAlpha = state.opacity;
        context.drawImage(state.overlay, 0, 0, width, height);
        context.globalAlpha = 1;
      }
    }
    if (state.showReference && state.referenceOverlay) drawOutline(state.referenceOverlay);
    context.restore();
    const clicks = state.view ? state.view.clicks : [];
    for (const click of clicks) {
      const { x, y } = screenPoint(click.row, click.col);
      context.beginPath();
      context.arc(x, y, 5, 0, 2 * Math.PI);
      context.fillStyle = click.label === 0 ? "#ffffff" : classColour(click.label);
      context.fill();
      context.lineWidth = 2;
      context.strokeStyle = click.label === 0 ? "#000000" : "#ffffff";
      context.stroke();
    }
  }

  // The pixels of each class of the overlay that have a pixel of another class (or the background) within
  // `thickness` pixels: the mask's outline, in the class colours, opaque; the rest transparent.
  function outlineOf(overlay, thickness) {
    const kept = state.outlines.get(overlay);
    if (kept && kept.thickness === thickness) return kept.canvas;
    const { canvas: outline, context: outlineContext } = offscreenCopy(overlay);
    const { width, height } = outline;
    const source = outlineContext.getImageData(0, 0, width, height).data;
    const drawn = outlineContext.createImageData(width, height);
    const target = drawn.data;
    const codes = new Int32Array(width * height); // 0: background; else 1 + the pixel's colour
    for (let p = 0, i = 0; p < codes.length; p++, i += 4) {
      codes[p] = source[i + 3] === 0 ? 0 : 1 + source[i] + (source[i + 1] << 8) + (source[i + 2] << 16);
    }
    for (let y = 0, p = 0; y < height; y++) {
      for (let x = 0; x < width; x++, p++) {
        const own = codes[p];
        if (own === 0) continue;
        let edge = false;
        for (let d = 1; d <= thickness && !edge; d++) {
          edge = x < d || codes[p - d] !== own || x + d >= width || codes[p + d] !== own
            || y < d || codes[p - d * width] !== own || y + d >= height || codes[p + d * width] !== own;
        }
        if (!edge) continue;
        const i = 4 * p;
        target[i] = source[i];
        target[i + 1] = source[i + 1];
        target[i + 2] = source[i + 2];
        target[i + 3] = 255;
      }
    }
    outlineContext.putImageData(drawn, 0, 0);
    state.outlines.set(overlay, { thickness, canvas: outline });
    return outline;
  }

  // The reference mask of the image (X_mask.ext beside a data-folder picture, a volume's label volume) as an
  // outline in its own colours, to check the mask against: shown to the user only, never to the model.
  async function showReference(on) {
    const image = state.view ? state.view.image : null;
    if (on && !(image && image.has_reference)) {
      say("This image has no reference mask (X_mask.ext beside the picture in the data folder, or a label volume).", true);
      return;
    }
    state.showReference = on;
    if (on && (!state.referenceOverlay || state.referenceOverlay.dataset.imageId !== image.id)) {
      try {
        const overlay = await loadImageElement(withToken(`/api/images/${encodeURIComponent(image.id)}/reference.png`));
        overlay.dataset.imageId = image.id;
        if (!state.view || state.view.image.id !== image.id) return; // another image was opened meanwhile
        state.referenceOverlay = overlay;
      } catch (error) {
        state.showReference = false;
        say(error.message, true);
      }
    }
    draw();
    if (state.showReference) say("the reference mask's outline in yellow, a second class orange (G hides it); the model never sees it", false);
  }

  function loadImageElement(src) {
    return new Promise((resolve, reject) => {
      const element = new Image();
      element.onload = () => resolve(element);
      element.onerror = () => reject(new Error("cannot load " + src.slice(0, 60)));
      element.src = src;
    });
  }

  // A slice of a volume: all its labelled slices in one NIfTI (there is one at least when this slice has a mask);
  // of a DICOM series of the data folder, also as a DICOM SEG referring to the series' images.
  function updateVolumeExports(view, hasMask) {
    const source = encodeURIComponent(view.image.source_id);
    const series = Boolean(state.volume && state.volume.id === view.image.source_id && state.volume.dicom_series);
    for (const [id, shown, query] of [["export-volume", Boolean(view.image.num_slices), ""], ["export-seg", series, "?format=seg"]]) {
      const link = $(id);
      link.hidden = !shown;
      link.href = hasMask && shown ? withToken(`/api/sources/${source}/export${query}`) : "#";
      link.setAttribute("aria-disabled", hasMask ? "false" : "true");
    }
  }

  async function showView(view) {
    state.view = view;
    state.overlay = view.mask_overlay ? await loadImageElement(view.mask_overlay) : null;
    $("image-name").textContent = view.image.name;
    $("image-state").textContent = { new: "new", in_progress: "in progress", done: "done" }[view.state];
    $("click-count").textContent = view.clicks.length;
    const maskVersion = view.mask_model_version === null ? "—" : String(view.mask_model_version);
    $("mask-version").textContent = view.source_domain && view.mask_model_version !== null
      ? `${maskVersion} (source domain: base model, learns from this image only)`
      : maskVersion;
    $("click-time").textContent = view.last_click_s === null ? "—" : `${view.last_click_s.toFixed(2)} s`;
    $("model-version").textContent = view.model_version;
    if (state.model) state.model.version = view.model_version;
    renderModelState();
    $("stroke-count").textContent = String(view.corrections || 0);
    canvas.dataset.clicks = String(view.clicks.length);
    canvas.dataset.strokes = String(view.corrections || 0);
    canvas.dataset.maskVersion = view.mask_model_version === null ? "" : String(view.mask_model_version);
    canvas.dataset.state = view.state;
    const done = view.state === "done";
    updateButtons();
    $("relabel").hidden = !done;
    const tag = done ? "final" : "current";
    const hasMask = Boolean(view.mask_overlay);
    for (const [id, format] of [["export-png", "png"], ["export-nifti", "nifti"]]) {
      const link = $(id);
      link.href = hasMask ? withToken(`/api/images/${encodeURIComponent(view.image.id)}/export?format=${format}&tag=${tag}`) : "#";
      link.setAttribute("aria-disabled", hasMask ? "false" : "true");
    }
    updateVolumeExports(view, hasMask);
    if (view.message) say(view.message, false);
    updateListEntry(view.image);
    updateReferenceDice(view, hasMask);
    draw();
  }

  // A data-folder picture X.ext with a reference mask X_mask.ext beside it: after every change, the Dice of the
  // mask against it (read by the server for this comparison only; the model never sees it).
  function updateReferenceDice(view, hasMask) {
    const item = $("reference-item");
    const request = ++state.referenceRequest;
    item.hidden = !view.image.has_reference;
    $("reference-dice").textContent = "—";
    // The volume's Dice when a slice is opened or finished, not after every click (it reads all labelled slices).
    const volumeSlice = state.volume && view.image.source_id === state.volume.id;
    if (volumeSlice && (view.state === "done" || state.volumeDiceFor !== view.image.id)) updateVolumeDice();
    if (!view.image.has_reference || !hasMask) return;
    api("GET", `/api/images/${encodeURIComponent(view.image.id)}/reference`)
      .then((score) => {
        if (request !== state.referenceRequest) return;
        const values = Object.entries(score.dice).map(([region, value]) => `${region} ${(100 * value).toFixed(1)}`);
        $("reference-dice").textContent = values.join(", ");
        item.title = `Dice of the mask against ${score.reference}; the model never sees it`;
      })
      .catch((error) => { if (request === state.referenceRequest) say(error.message, true); });
  }

  // A volume with a reference: the masks of its labelled slices against it as one 3D overlap (when one of its slices
  // is opened or finished), and over the whole volume, where the slices not labelled yet count as background.
  function updateVolumeDice() {
    const line = $("volume-dice");
    const source = state.volume;
    const request = ++state.volumeDiceRequest;
    const image = state.view ? state.view.image : null;
    state.volumeDiceFor = image ? image.id : null;
    if (!source || !image || image.source_id !== source.id || !image.has_reference) {
      line.hidden = true;
      return;
    }
    api("GET", `/api/sources/${encodeURIComponent(source.id)}/reference/score`)
      .then((score) => {
        if (request !== state.volumeDiceRequest) return;
        const percent = (values) => Object.entries(values).map(([region, value]) => `${region} ${(100 * value).toFixed(1)}`).join(", ");
        const labelled = new Set(score.labelled_slices);
        const missing = score.marked_slices.filter((index) => !labelled.has(index)).length;
        if (score.dice_labelled === null) {
          line.textContent = "Volume Dice: no slice of this volume has a mask yet.";
        } else {
          const count = score.labelled_slices.length;
          line.textContent = `Volume Dice, ${count} labelled slice${count === 1 ? "" : "s"}: ${percent(score.dice_labelled)}; ` +
            `whole volume: ${percent(score.dice_volume)}` +
            (missing ? ` (${missing} slice${missing === 1 ? "" : "s"} the reference marks not labelled yet)` : "");
        }
        line.title = `3D Dice against ${score.reference}, all slices' masks together (the model never sees it); ` +
          "the whole-volume value counts every slice without a mask as background";
        line.hidden = false;
      })
      .catch((error) => {
        if (request !== state.volumeDiceRequest) return;
        line.textContent = error.message;
        line.hidden = false;
      });
  }

  async function openImage(imageId, relabel) {
    let view;
    const path = `/api/images/${encodeURIComponent(imageId)}/open`;
    try {
      view = await api("POST", path, { relabel: Boolean(relabel) });
    } catch (error) {
      if (error.status === 409 && /another browser session/.test(error.detail || "")) {
        const take = await confirmAction(error.message + " Take it over in this tab? The other tab loses it.", "Take over");
        if (!take) { say("The image stays with the other tab.", false); return; }
        view = await api("POST", path, { relabel: Boolean(relabel), take_over: true });
      } else {
        say(error.message, true);
        return;
      }
    }
    if (state.current && state.current !== imageId) releaseImage(state.current, false);
    const changed = state.current !== imageId;
    state.current = imageId;
    forgetRedo(); // another image, or this one opened again (a new labelling session after Relabel)
    if (changed || !state.picture) {
      // A photograph the model sees resized onto its grid (info.crops) is shown as itself, sharp and with its own
      // aspect ratio, over the grid's extent; the grid picture stays the frame of clicks and strokes.
      const base = `/api/images/${encodeURIComponent(imageId)}`;
      const [picture, sharp] = await Promise.all([
        loadImageElement(withToken(`${base}/display.png`)),
        state.info && state.info.crops ? loadImageElement(withToken(`${base}/picture`)).catch(() => null) : null,
      ]);
      state.picture = picture;
      state.sharp = sharp;
      state.referenceOverlay = null; // the previous image's
      fit();
    }
    say(view.state === "done" ? "finished image; its label is kept (Relabel to label it again)" : "", false);
    await showView(view);
    if (state.showReference && view.image.has_reference) await showReference(true); // kept on from image to image
    if (view.image.source_id && view.image.num_slices) {
      await showVolumePanel(await api("GET", `/api/sources/${encodeURIComponent(view.image.source_id)}`), view.image.slice_index);
    } else {
      state.volume = null;
      $("volume-panel").hidden = true;
    }
  }

  async function sendClick(row, col, label, redoing = false) {
    if (!state.current) return;
    if (!redoing) state.redo = []; // a new action: what was undone can no longer be redone
    const started = performance.now();
    setBusy("segmenting…");
    try {
      const view = await api("POST", `/api/images/${encodeURIComponent(state.current)}/clicks`, { row, col, label });
      await showView(view);
      say(`mask updated in ${((performance.now() - started) / 1000).toFixed(1)} s`);
    } finally {
      setBusy("");
    }
  }

  async function sendCrop(top, left, bottom, right) {
    if (!state.current) return;
    setBusy("cropping…");
    try {
      const image = await api("POST", `/api/images/${encodeURIComponent(state.current)}/crop`, { top, left, bottom, right });
      await refreshList();
      selectTool("click");
      await openImage(image.id);
      say(`New image: ${image.name}. Click on it; its masks are exported in the whole picture's frame.`, false);
    } catch (error) {
      say(error.message, true);
    } finally {
      setBusy("");
    }
  }

  async function sendStroke(points, label, radius = state.brushRadius, redoing = false) {
    if (!state.current || points.length === 0) return;
    if (!redoing) state.redo = [];
    setBusy("painting…");
    try {
      const view = await api("POST", `/api/images/${encodeURIComponent(state.current)}/corrections`, {
        points, radius, label,
      });
      state.strokesSent.push({ points, radius, label });
      await showView(view);
      say(label === 0 ? "erased (Undo takes it back)" : "painted (Undo takes it back)");
    } finally {
      setBusy("");
    }
  }

  const CONFIRM = {
    finish: ["Finish this image? Its mask becomes the label and the model adapts to it (a new saved version).", "Finish", true],
    reset: ["Remove every click and brush stroke of this image? The model's weights stay as they are.", "Reset"],
  };

  async function imageAction(action) {
    if (!state.current || !state.view || state.view.state === "done") return;
    if (state.view.clicks.length === 0) { say("Click on the image first.", true); return; }
    if (CONFIRM[action] && !(await confirmAction(...CONFIRM[action]))) {
      say(`${action} cancelled`, false);
      return;
    }
    if (action === "finish") { state.finishing = true; setBusy("adapting the model to this image…"); }
    const before = state.view;
    try {
      const view = await api("POST", `/api/images/${encodeURIComponent(state.current)}/${action}`);
      if (action === "undo") rememberUndone(before, view);
      else forgetRedo();
      await showView(view);
      if (action === "finish") {
        await Promise.all([refreshModel(), refreshChart()]);
      } else if (action === "undo") {
        await refreshModel();
      }
    } finally {
      if (action === "finish") { state.finishing = false; setBusy(""); }
    }
  }

  // Undo takes back the latest click or brush stroke; Redo (Shift+Z, Ctrl+Y) sends it again, as a new click
  // (adapting the model again) or stroke, until another action is taken.
  function rememberUndone(before, after) {
    if (after.clicks.length < before.clicks.length) {
      const click = before.clicks[before.clicks.length - 1];
      state.redo.push({ click: [click.row, click.col, click.label] });
    } else if (after.corrections < before.corrections) {
      const stroke = state.strokesSent.pop();
      if (stroke) state.redo.push({ stroke });
      else state.redo = []; // a stroke painted before this tab opened the image: its points are not known here
    }
  }

  function forgetRedo() {
    state.redo = [];
    state.strokesSent = [];
  }

  async function redo() {
    if (!state.current || !state.view || state.view.state === "done") return;
    const entry = state.redo.pop();
    if (!entry) { say("Nothing to redo.", true); return; }
    if (entry.click) await sendClick(...entry.click, true);
    else await sendStroke(entry.stroke.points, entry.stroke.label, entry.stroke.radius, true);
  }

  // Let another tab have the image at once when this one closes or moves on (no headers with a beacon).
  function releaseImage(imageId, beacon) {
    const url = withToken(`/api/images/${encodeURIComponent(imageId)}/release?client=${encodeURIComponent(state.clientId)}`);
    if (beacon && navigator.sendBeacon) navigator.sendBeacon(url);
  }
  window.addEventListener("pagehide", () => { if (state.current) releaseImage(state.current, true); });

  async function nextImage() {
    const after = state.current ? `?after=${encodeURIComponent(state.current)}` : "";
    const answer = await api("GET", "/api/images/next" + after);
    if (!answer.image) {
      say("every image is done", false);
      return;
    }
    await openImage(answer.image.id);
  }

  // ------------------------------------------------------------------ pointer, wheel and keys
  let pointer = null;

  canvas.addEventListener("contextmenu", (event) => event.preventDefault());
  function imagePoint(event) {
    return [Math.floor((event.offsetY - state.panY) / zoomY()), Math.floor((event.offsetX - state.panX) / state.zoom)];
  }

  function insideImage(point) {
    return state.picture && point[0] >= 0 && point[1] >= 0 && point[0] < state.picture.naturalHeight && point[1] < state.picture.naturalWidth;
  }

  canvas.addEventListener("pointerdown", (event) => {
    canvas.focus();
    pointer = { x: event.offsetX, y: event.offsetY, button: event.button, dragging: false, panX: state.panX, panY: state.panY };
    if (event.shiftKey && event.button === 0 && state.picture) {
      pointer.window = { ...state.window };
    } else if (state.tool === "crop" && event.button === 0 && state.picture) {
      pointer.box = [imagePoint(event), imagePoint(event)];
    } else if (state.tool !== "click" && event.button === 0 && state.picture) {
      pointer.stroke = [];
      const point = imagePoint(event);
      if (insideImage(point)) pointer.stroke.push(point);
      drawStroke(pointer.stroke);
    }
    canvas.setPointerCapture(event.pointerId);
  });
  canvas.addEventListener("pointermove", (event) => {
    if (!pointer) return;
    if (pointer.window) {
      dragWindow(pointer.window, event.offsetX - pointer.x, event.offsetY - pointer.y);
      return;
    }
    if (pointer.box) {
      pointer.box[1] = imagePoint(event);
      drawBox(pointer.box);
      return;
    }
    if (pointer.stroke) {
      const point = imagePoint(event);
      const last = pointer.stroke[pointer.stroke.length - 1];
      if (insideImage(point) && (!last || last[0] !== point[0] || last[1] !== point[1])) pointer.stroke.push(point);
      drawStroke(pointer.stroke);
      return;
    }
    const dx = event.offsetX - pointer.x;
    const dy = event.offsetY - pointer.y;
    if (!pointer.dragging && Math.hypot(dx, dy) > DRAG_THRESHOLD_PX) pointer.dragging = true;
    if (pointer.dragging) {
      state.panX = pointer.panX + dx;
      state.panY = pointer.panY + dy;
      draw();
    }
  });
  canvas.addEventListener("pointerup", (event) => {
    const start = pointer;
    pointer = null;
    if (start && start.window) return; // a contrast drag (Shift) never sends a click
    if (start && start.box) {
      draw();
      const [[r0, c0], [r1, c1]] = start.box;
      if (Math.abs(r1 - r0) < 4 && Math.abs(c1 - c0) < 4) { say("Drag a box around the region to crop to.", true); return; }
      enqueue(() => sendCrop(Math.min(r0, r1), Math.min(c0, c1), Math.max(r0, r1) + 1, Math.max(c0, c1) + 1));
      return;
    }
    if (start && start.stroke) {
      const points = start.stroke.slice(0, 5000);
      if (!state.view || state.view.state === "done") { draw(); say("This image is finished and its label is kept. Press Relabel to label it again.", true); return; }
      if (state.finishing) { draw(); say("Please wait: the model is adapting to the finished image.", true); return; }
      if (state.view.clicks.length === 0) { draw(); say("Click on the image first; then touch the mask up with the brush.", true); return; }
      enqueue(() => sendStroke(points, state.tool === "eraser" ? 0 : state.classIndex));
      return;
    }
    if (!start || start.dragging || !state.picture || !state.view) return;
    const col = Math.floor((event.offsetX - state.panX) / state.zoom);
    const row = Math.floor((event.offsetY - state.panY) / zoomY());
    if (row < 0 || col < 0 || row >= state.picture.naturalHeight || col >= state.picture.naturalWidth) {
      say("click inside the image", true);
      return;
    }
    if (state.view.state === "done") {
      say("This image is finished and its label is kept. Press Relabel to label it again.", true);
      return;
    }
    if (state.finishing) {
      say("Please wait: the model is adapting to the finished image. Your click was not sent.", true);
      return;
    }
    if (start.button === 0) enqueue(() => sendClick(row, col, state.classIndex));
    else if (start.button === 2) enqueue(() => sendClick(row, col, 0));
  });
  canvas.addEventListener("wheel", (event) => {
    event.preventDefault();
    zoomAt(event.offsetX, event.offsetY, event.deltaY < 0 ? ZOOM_STEP : 1 / ZOOM_STEP);
  }, { passive: false });

  function zoomAt(x, y, factor) {
    state.panX = x - (x - state.panX) * factor;
    state.panY = y - (y - state.panY) * factor;
    state.zoom *= factor;
    draw();
  }

  document.addEventListener("keydown", (event) => {
    const target = event.target;
    if (target instanceof HTMLInputElement && target.type !== "range" && target.type !== "checkbox") return;
    if (target instanceof HTMLSelectElement) return;
    if ($("confirm-dialog").open) return; // the dialog has its own keys (Enter = focused button, Escape = Cancel)
    const key = event.key.toLowerCase();
    const rect = canvas.getBoundingClientRect();
    let handled = true;
    if ((key === "z" && event.shiftKey) || (key === "y" && (event.ctrlKey || event.metaKey))) enqueue(redo);
    else if (key === "z") enqueue(() => imageAction("undo"));
    else if (key === "r" && !event.ctrlKey && !event.metaKey) enqueue(() => imageAction("reset"));
    else if (key === "f" || key === "enter") enqueue(() => imageAction("finish"));
    else if (key === "n") enqueue(nextImage);
    else if (key === "." || key === ",") enqueue(() => stepSlice(key === "." ? 1 : -1));
    else if (key === "/") $("image-filter").focus();
    else if (key === "c") selectTool("click");
    else if (key === "b") selectTool("brush");
    else if (key === "e") selectTool("eraser");
    else if (key === "k" && state.info && state.info.crops) selectTool("crop");
    else if (key === "[" || key === "]") {
      state.brushRadius = Math.max(1, Math.min(20, state.brushRadius + (key === "]" ? 1 : -1)));
      $("brush-size").value = String(state.brushRadius);
    }
    else if (key === "o") { state.showOverlay = !state.showOverlay; draw(); }
    else if (key === "g") enqueue(() => showReference(!state.showReference));
    else if (key === "l" && !event.ctrlKey && !event.metaKey) {
      state.outline = !state.outline;
      draw();
      say(state.outline ? "the mask as its outline (L: filled again)" : "the mask filled", false);
    }
    else if (key === "w") setWindow(FULL_WINDOW.low, FULL_WINDOW.high);
    else if (key === "+" || key === "=") zoomAt(rect.width / 2, rect.height / 2, ZOOM_STEP);
    else if (key === "-") zoomAt(rect.width / 2, rect.height / 2, 1 / ZOOM_STEP);
    else if (key === "0") fit();
    else if (key === "arrowleft") { state.panX += 40; draw(); }
    else if (key === "arrowright") { state.panX -= 40; draw(); }
    else if (key === "arrowup") { state.panY += 40; draw(); }
    else if (key === "arrowdown") { state.panY -= 40; draw(); }
    else if (/^[1-9]$/.test(key) && state.info && Number(key) < state.info.class_names.length) selectClass(Number(key));
    else handled = false;
    if (handled) event.preventDefault();
  });

  // ------------------------------------------------------------------ class picker and controls
  function selectClass(index) {
    state.classIndex = index;
    const input = document.querySelector(`#class-picker input[value="${index}"]`);
    if (input) input.checked = true;
  }

  function buildClassPicker(names) {
    const picker = $("class-picker");
    names.forEach((name, index) => {
      if (index === 0) return; // background is the right click
      const label = document.createElement("label");
      const input = document.createElement("input");
      input.type = "radio";
      input.name = "class";
      input.value = String(index);
      input.addEventListener("change", () => selectClass(index));
      const swatch = document.createElement("span");
      swatch.textContent = ` ${name} (${index})`;
      swatch.style.color = classColour(index);
      label.append(input, swatch);
      picker.append(label);
    });
    selectClass(1);
  }

  for (const input of document.querySelectorAll('#tool-picker input[name="tool"]')) {
    input.addEventListener("change", () => selectTool(input.value));
  }
  $("image-filter").addEventListener("input", renderList);
  $("image-filter").addEventListener("keydown", (event) => {
    // Enter opens the first image the filter leaves; Escape empties the filter and returns to the image.
    if (event.key === "Enter") {
      const first = $("image-list").querySelector("li");
      if (first) enqueue(() => openImage(first.dataset.imageId));
      event.target.blur();
    } else if (event.key === "Escape") {
      event.target.value = "";
      renderList();
      event.target.blur();
    } else return;
    event.preventDefault();
  });
  $("brush-size").addEventListener("input", (event) => { state.brushRadius = Number(event.target.value); });
  $("opacity").addEventListener("input", (event) => {
    state.opacity = Number(event.target.value) / 100;
    draw();
  });
  $("zoom-fit").addEventListener("click", fit);
  $("undo").addEventListener("click", () => enqueue(() => imageAction("undo")));
  $("reset").addEventListener("click", () => enqueue(() => imageAction("reset")));
  $("finish").addEventListener("click", () => enqueue(() => imageAction("finish")));
  $("next").addEventListener("click", () => enqueue(nextImage));
  $("relabel").addEventListener("click", () => enqueue(() => state.current && openImage(state.current, true)));
  $("adaptation").addEventListener("change", (event) =>
    enqueue(async () => renderModel(await api("PUT", "/api/model/settings", { adaptation: event.target.checked }))));
  $("strategy").addEventListener("change", (event) =>
    enqueue(async () => {
      renderModel(await api("PUT", "/api/model/settings", { strategy: event.target.value }));
      say(`strategy ${event.target.value}`);
    }));
  $("version-select").addEventListener("change", (event) => { event.target.dataset.picked = event.target.value; });
  $("rollback").addEventListener("click", () =>
    enqueue(async () => {
      const version = Number($("version-select").value);
      const current = state.model ? state.model.version : null;
      const ok = await confirmAction(
        `Roll the shared model back to version ${version}? Everyone's next masks come from it. Nothing is deleted: ` +
        "you can roll forward again to any saved version" +
        (state.model && state.model.version !== state.model.saved_version ? "; learning since the last saved version is lost." : "."),
        "Roll back");
      if (!ok) { say("rollback cancelled", false); return; }
      const model = await api("POST", "/api/model/rollback", { version });
      delete $("version-select").dataset.picked;
      renderModel(model);
      say(`rolled back to version ${version}` + (current !== null ? ` (was ${current}); pick a later saved version to go back` : ""));
    }));
  $("save-version").addEventListener("click", () =>
    enqueue(async () => {
      const version = await api("POST", "/api/model/versions");
      await refreshModel();
      say(`saved version ${version.version}`);
    }));
  for (const id of ["export-png", "export-nifti", "export-volume", "export-seg"]) {
    $(id).addEventListener("click", (event) => {
      if ($(id).getAttribute("aria-disabled") === "true") {
        event.preventDefault();
        say("no mask to export yet", true);
      }
    });
  }

  // ------------------------------------------------------------------ upload and volumes
  // `choices`: the folder's reference choices when the caller already has them (the answer to a choice).
  async function showVolumePanel(source, sliceIndex, choices = null) {
    if (!state.volume || state.volume.id !== source.id) state.referencePixels = null; // another volume's
    state.volume = source;
    const slider = $("slice-slider");
    slider.max = String(source.num_slices - 1);
    slider.value = String(sliceIndex === null || sliceIndex === undefined ? Math.floor(source.num_slices / 2) : sliceIndex);
    $("slice-max").textContent = String(source.num_slices - 1);
    $("volume-panel").hidden = false;
    if (state.view) updateVolumeExports(state.view, Boolean(state.view.mask_overlay));
    showCurrentInList();
    updateSlicePreview();
    $("reference-slices").hidden = true;
    $("volume-dice").hidden = true;
    const image = state.view ? state.view.image : null;
    await showReferenceChoice(source, choices);
    if (image && image.source_id === source.id && image.has_reference) await showReferenceSlices(source);
  }

  // A folder with several label volumes (two raters, a lesion and a tissue map…): the user says which one is the
  // reference of its scans (kept by the server); a scan with its own X_mask.nii.gz keeps that one.
  async function showReferenceChoice(source, known = null) {
    const row = $("reference-choice-row");
    row.hidden = true;
    if (source.origin !== "data") return;
    let choices = known;
    try {
      choices ??= await api("GET", `/api/sources/${encodeURIComponent(source.id)}/reference/choices`);
    } catch (error) {
      say(error.message, true);
      return;
    }
    if (state.volume !== source || choices.own_mask || choices.label_volumes.length < 2) return;
    const select = $("reference-choice");
    select.replaceChildren();
    if (choices.reference === null) select.append(new Option("choose one…", "", true, true));
    for (const path of choices.label_volumes) {
      const option = new Option(path.split("/").pop(), path, false, path === choices.reference);
      option.title = path;
      select.append(option);
    }
    select.options[0].disabled = choices.reference === null;
    row.hidden = false;
  }

  $("reference-choice").addEventListener("change", (event) =>
    enqueue(async () => {
      const source = state.volume;
      if (!source || !event.target.value) return;
      const choices = await api("PUT", `/api/sources/${encodeURIComponent(source.id)}/reference`, {
        label_volume: event.target.value,
      });
      await refreshList(); // whether each slice has a reference follows the choice
      if (state.view && state.view.image.source_id === source.id) {
        await showView({ ...state.view, image: await api("GET", `/api/images/${encodeURIComponent(state.view.image.id)}`) });
      }
      await showVolumePanel(source, Number($("slice-slider").value), choices);
      say(`the reference of this folder's scans is now ${event.target.value}`);
    }));

  async function showReferenceSlices(source) {
    // Where the volume's reference mask (never learnt from) marks something: lesions of MS scans sit on few slices.
    let answer;
    try {
      answer = await api("GET", `/api/sources/${encodeURIComponent(source.id)}/reference`);
    } catch (error) {
      answer = { reference: "", pixels: null, error: error.message };
    }
    if (state.volume !== source) return; // another volume was opened meanwhile
    state.referencePixels = answer.pixels;
    drawSliceMap();
    if (answer.pixels === null) {
      $("reference-slices-text").textContent = answer.error;
      $("largest-reference").hidden = true;
      $("reference-slices").hidden = false;
      return;
    }
    const marked = answer.pixels.flatMap((pixels, index) => (pixels > 0 ? [index] : []));
    if (marked.length === 0) {
      $("reference-slices-text").textContent = "The reference marks no slice of this volume.";
      $("largest-reference").hidden = true;
    } else {
      const largest = answer.pixels.indexOf(Math.max(...answer.pixels));
      $("reference-slices-text").textContent =
        `The reference marks ${marked.length} of ${answer.pixels.length} slices (${marked[0]}–${marked[marked.length - 1]}).`;
      $("largest-reference").textContent = `Show slice ${largest}`;
      $("largest-reference").dataset.slice = String(largest);
      $("largest-reference").hidden = false;
    }
    $("reference-slices").title = answer.reference;
    $("reference-slices").hidden = false;
    updateVolumeDice();
  }

  // The volume at a glance, one column per slice: finished slices green, slices in progress amber, slices the
  // reference marks (and nobody labelled yet) grey, the slice shown outlined in white. A click goes to that slice.
  function drawSliceMap() {
    const map = $("slice-map");
    const volume = state.volume;
    if (!volume) return;
    const width = Math.max(1, Math.round(map.clientWidth));
    if (map.width !== width) map.width = width;
    const paint = map.getContext("2d");
    const style = getComputedStyle(document.documentElement);
    paint.clearRect(0, 0, map.width, map.height);
    const column = (index) => [Math.floor((index * map.width) / volume.num_slices), Math.max(1, Math.ceil(map.width / volume.num_slices))];
    const fill = (index, colour) => {
      const [x, w] = column(index);
      paint.fillStyle = colour;
      paint.fillRect(x, 0, w, map.height);
    };
    (state.referencePixels || []).forEach((pixels, index) => { if (pixels > 0) fill(index, style.getPropertyValue("--muted")); });
    for (const image of state.images) {
      if (image.source_id !== volume.id || image.slice_index === null || image.status === "new") continue;
      fill(image.slice_index, style.getPropertyValue(image.status === "done" ? "--done" : "--progress"));
    }
    const [x, w] = column(Number($("slice-slider").value));
    paint.strokeStyle = "#ffffff";
    paint.lineWidth = 2;
    paint.strokeRect(x + 1, 1, Math.max(1, w - 2), map.height - 2);
  }

  // The slice under the pointer on the slice map.
  function sliceAt(event) {
    const index = Math.floor((event.offsetX / $("slice-map").clientWidth) * state.volume.num_slices);
    return Math.max(0, Math.min(state.volume.num_slices - 1, index));
  }

  // What the slice map shows of one slice, in words (its tooltip: columns are narrow in long volumes).
  function sliceSummary(index) {
    const image = state.images.find((item) => item.source_id === state.volume.id && item.slice_index === index);
    const status = { done: "finished", in_progress: "in progress", new: "in the list, not labelled" }[image ? image.status : ""];
    const pixels = (state.referencePixels || [])[index] || 0;
    const parts = [status || "not labelled", pixels > 0 ? `the reference marks ${pixels} px` : ""].filter(Boolean);
    return `slice ${index}: ${parts.join("; ")}. Click to go there.`;
  }

  $("slice-map").addEventListener("click", (event) => {
    if (!state.volume) return;
    $("slice-slider").value = String(sliceAt(event));
    updateSlicePreview();
  });
  $("slice-map").addEventListener("mousemove", (event) => {
    if (state.volume) $("slice-map").title = sliceSummary(sliceAt(event));
  });

  function updateSlicePreview() {
    if (!state.volume) return;
    const index = $("slice-slider").value;
    $("slice-value").textContent = index;
    drawSliceMap();
    $("slice-preview").src = withToken(`/api/sources/${encodeURIComponent(state.volume.id)}/slices/${index}/preview.png`);
  }

  $("slice-slider").addEventListener("input", updateSlicePreview);
  $("largest-reference").addEventListener("click", (event) => {
    $("slice-slider").value = event.target.dataset.slice;
    updateSlicePreview();
  });
  // Make one slice of the open volume an image of the list (or find it) and open it.
  async function labelSlice(index) {
    if (!state.volume) return;
    const image = await api("POST", `/api/sources/${encodeURIComponent(state.volume.id)}/slices`, { index });
    await refreshList();
    await openImage(image.id);
  }

  // The slice above (+1) or below (−1) the one shown, keys . and , : labelling a volume slice after slice.
  async function stepSlice(delta) {
    if (!state.volume) {
      say("the image shown is not a slice of a volume", true);
      return;
    }
    const image = state.view ? state.view.image : null;
    const shown = image && image.source_id === state.volume.id && image.slice_index !== null;
    const index = (shown ? image.slice_index : Number($("slice-slider").value)) + delta;
    if (index < 0 || index >= state.volume.num_slices) {
      say(`no slice ${index}: this volume has slices 0–${state.volume.num_slices - 1}`, true);
      return;
    }
    await labelSlice(index);
  }

  $("add-slice").addEventListener("click", () => enqueue(() => labelSlice(Number($("slice-slider").value))));
  $("slice-down").addEventListener("click", () => enqueue(() => stepSlice(-1)));
  $("slice-up").addEventListener("click", () => enqueue(() => stepSlice(1)));

  // A DICOM series goes up as one zip of its slices (stored, not compressed: the server unpacks it and reads the
  // series as one volume). CRC-32 as zip readers check it.
  const CRC_TABLE = (() => {
    const table = new Uint32Array(256);
    for (let n = 0; n < 256; n += 1) {
      let c = n;
      for (let k = 0; k < 8; k += 1) c = c & 1 ? 0xedb88320 ^ (c >>> 1) : c >>> 1;
      table[n] = c >>> 0;
    }
    return table;
  })();

  function crc32(bytes) {
    let c = 0xffffffff;
    for (let i = 0; i < bytes.length; i += 1) c = CRC_TABLE[(c ^ bytes[i]) & 0xff] ^ (c >>> 8);
    return (c ^ 0xffffffff) >>> 0;
  }

  async function zipOf(files) {
    const parts = [];
    const central = [];
    let offset = 0;
    for (const file of files) {
      const data = new Uint8Array(await file.arrayBuffer());
      const name = new TextEncoder().encode(file.webkitRelativePath || file.name);
      const crc = crc32(data);
      const local = new DataView(new ArrayBuffer(30));
      const entry = new DataView(new ArrayBuffer(46));
      local.setUint32(0, 0x04034b50, true);
      entry.setUint32(0, 0x02014b50, true);
      entry.setUint16(4, 20, true);
      for (const [view, at] of [[local, 4], [entry, 6]]) {
        view.setUint16(at, 20, true); // version needed
        view.setUint16(at + 2, 0x0800, true); // UTF-8 names; method 0 (stored) follows
        view.setUint16(at + 8, 33, true); // date 1980-01-01
        view.setUint32(at + 10, crc, true);
        view.setUint32(at + 14, data.length, true);
        view.setUint32(at + 18, data.length, true);
        view.setUint16(at + 22, name.length, true);
      }
      entry.setUint32(42, offset, true);
      parts.push(local, name, data);
      central.push(entry, name);
      offset += 30 + name.length + data.length;
    }
    const size = central.reduce((total, part) => total + part.byteLength, 0);
    const end = new DataView(new ArrayBuffer(22));
    end.setUint32(0, 0x06054b50, true);
    end.setUint16(8, files.length, true);
    end.setUint16(10, files.length, true);
    end.setUint32(12, size, true);
    end.setUint32(16, offset, true);
    return new Blob([...parts, ...central, end], { type: "application/zip" });
  }

  // Files that may be slices of a DICOM series: all but pictures, volumes and documents by their ending (PACS
  // exports name slices IM0001, or by their UID, 1.2.840.113619.2.55.3.604688119.969.1268071029.320.12); the
  // server reads the DICOM ones among them and leaves the rest (a DICOMDIR, notes).
  const NOT_DICOM = /\.(png|jpe?g|tiff?|webp|nii|gz|zip|nrrd|nhdr|txt|md|xml|json|csv|pdf|html?)$/i;
  const isDicomSlice = (file) => /\.dcm$/i.test(file.name) || !NOT_DICOM.test(file.name);

  async function uploadOne(body, name) {
    if (state.info && body.size > state.info.max_upload_bytes) {
      const limit = Math.round(state.info.max_upload_bytes / 1048576);
      throw new Error(`${name} (${Math.ceil(body.size / 1048576)} MB) is larger than the upload limit of ${limit} MB; ` +
        "the server's --max-upload-mb raises it, or put the files in its data folder (--data)");
    }
    setBusy(`uploading ${name}…`);
    try {
      return await api("POST", `/api/uploads?filename=${encodeURIComponent(name)}`, undefined, body);
    } finally {
      setBusy("");
    }
  }

  // Several files: DICOM slices go up together as one series, other files one by one; the last one is opened.
  async function uploadFiles(files) {
    if (!files.length) return;
    say("");
    const candidates = files.filter(isDicomSlice);
    const slices = candidates.length > 1 ? candidates : []; // one DICOM file alone is a picture of its own
    const uploads = files.filter((file) => !slices.includes(file)).map((file) => [file, file.name]);
    if (slices.length) {
      const folder = (slices[0].webkitRelativePath || "").split("/")[0] || "DICOM"; // the chosen folder's name
      setBusy(`packing ${slices.length} DICOM files…`);
      try {
        uploads.push([await zipOf(slices), `${folder}.zip`]);
      } finally {
        setBusy("");
      }
    }
    const warnings = [];
    const done = [];
    let result = null;
    const failed = [];
    for (const [body, name] of uploads) {
      let answer = null;
      try {
        answer = await uploadOne(body, name);
      } catch (error) {
        if (uploads.length === 1) throw error; // said as any refusal is
        failed.push(error.message); // the others still go up
      }
      if (!answer) continue;
      result = answer;
      done.push(answer.source.name);
      if (answer.warning) warnings.push(`${answer.source.name}: ${answer.warning}.`);
    }
    $("upload-warning").hidden = !warnings.length && !failed.length;
    $("upload-warning").textContent = [...failed.map((text) => `refused: ${text}`), ...warnings].join(" ");
    if (!result) {
      if (failed.length) say(failed.join(" "), true);
      return;
    }
    await refreshList();
    await openImage(result.image.id);
    if (result.source.kind === "volume") await showVolumePanel(result.source, result.image.slice_index);
    const what = done.join(", ");
    const trouble = [...failed.map((text) => `refused: ${text}`), ...warnings].join(" ");
    say(trouble ? `uploaded ${what}, but ${trouble}` : `uploaded ${what}`, Boolean(trouble));
  }

  for (const id of ["upload-input", "upload-folder"]) {
    $(id).addEventListener("change", (event) =>
      enqueue(async () => {
        const files = [...event.target.files].filter((file) => !file.name.startsWith("."));
        try {
          await uploadFiles(files);
        } finally {
          event.target.value = "";
        }
      }));
  }

  // ------------------------------------------------------------------ start
  async function start() {
    resizeCanvas();
    try {
      state.info = await api("GET", "/api/info");
    } catch (error) {
      say(error.message, true);
      return;
    }
    $("task-label").textContent = `task: ${state.info.task} · classes: ${state.info.class_names.join(", ")}`;
    $("max-upload").textContent = `${Math.round(state.info.max_upload_bytes / 1048576)} MB`;
    buildClassPicker(state.info.class_names);
    $("crop-tool").hidden = !state.info.crops;
    for (const key of document.querySelectorAll(".crop-key")) key.hidden = !state.info.crops;
    $("data-warning").hidden = !state.info.data_warning;
    $("data-warning").textContent = state.info.data_warning ? `The data folder: ${state.info.data_warning}.` : "";
    $("channel-note").hidden = state.info.channel === null || state.info.channel === undefined;
    $("channel-value").textContent = String(state.info.channel ?? "");
    renderModel(state.info.model);
    await Promise.all([refreshList(), refreshChart()]);
    document.body.dataset.ready = "true";
  }

  // The upload section folds away to give the image list its room; this browser remembers the choice.
  const UPLOAD_OPEN_KEY = "clickadapt.upload-open";
  try {
    if (window.localStorage.getItem(UPLOAD_OPEN_KEY) === "no") $("upload-section").open = false;
  } catch (error) { /* storage off (private mode): always open */ }
  $("upload-section").addEventListener("toggle", () => {
    try { window.localStorage.setItem(UPLOAD_OPEN_KEY, $("upload-section").open ? "yes" : "no"); } catch (error) { /* not kept */ }
  });

  window.addEventListener("resize", () => { resizeCanvas(); if (state.picture) fit(); else draw(); });
  start();
})();

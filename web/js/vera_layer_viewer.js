// Vera layer viewer: on Vera Decode Layers, Vera Composite and Vera Save Layers, shows the edit layer over a
// checkerboard, the alpha matte, the composite, a hover-to-compare view (source left of the cursor, composite
// right) and a difference heatmap, frame by frame. Images come only from this ComfyUI server (/view), written
// by the node into ComfyUI's temp folder (see nodes/previews.py); nothing is fetched from elsewhere.
import { app } from "../../../scripts/app.js";
import { api } from "../../../scripts/api.js";

const VIEWER_NODES = new Set(["VeraDecodeLayers", "VeraComposite", "VeraSaveLayers"]);
const MODES = [
  ["edit", "Edit layer", "The edit layer over a checkerboard: transparent where alpha is 0."],
  ["alpha", "Alpha", "The matte: white = edit layer opaque, black = source untouched."],
  ["composite", "Composite", "The composite."],
  ["compare", "Compare", "Hover: source left of the cursor, composite right of it."],
  ["difference", "Difference", "|source - composite| x4 as a heatmap: black = identical (bit-exact)."],
];

function viewUrl(file) {
  const query = new URLSearchParams({ filename: file.filename, subfolder: file.subfolder || "", type: file.type });
  return api.apiURL(`/view?${query.toString()}`);
}

function loadImage(file) {
  return new Promise((resolve, reject) => {
    const image = new Image();
    image.onload = () => resolve(image);
    image.onerror = () => reject(new Error(`could not load ${file.filename}`));
    image.src = viewUrl(file);
  });
}

function checkerboard(ctx, width, height, cell = 8) {
  for (let y = 0; y < height; y += cell) {
    for (let x = 0; x < width; x += cell) {
      ctx.fillStyle = ((x / cell + y / cell) % 2 === 0) ? "#cccccc" : "#8c8c8c";
      ctx.fillRect(x, y, cell, cell);
    }
  }
}

function heat(value) {
  // 0 -> black, then red, yellow, white (as vera.frames.layers.difference_heatmap)
  const v = Math.min(1, value) * 3;
  return [Math.min(1, v), Math.min(1, Math.max(0, v - 1)), Math.min(1, Math.max(0, v - 2))].map((c) => c * 255);
}

class LayerViewer {
  constructor() {
    this.entry = null;
    this.mode = "edit";
    this.frame = 0;
    this.hoverX = null;
    this.cache = new Map();
    this.element = document.createElement("div");
    this.element.className = "vera-layer-viewer";
    Object.assign(this.element.style, { display: "flex", flexDirection: "column", gap: "4px", width: "100%",
                                        height: "100%", minHeight: "220px", boxSizing: "border-box" });
    this.bar = document.createElement("div");
    Object.assign(this.bar.style, { display: "flex", flexWrap: "wrap", gap: "2px" });
    this.buttons = new Map();
    for (const [mode, label, help] of MODES) {
      const button = document.createElement("button");
      button.textContent = label;
      button.title = help;
      button.dataset.mode = mode;
      Object.assign(button.style, { fontSize: "11px", padding: "1px 6px", cursor: "pointer" });
      button.addEventListener("click", () => this.setMode(mode));
      this.bar.appendChild(button);
      this.buttons.set(mode, button);
    }
    this.slider = document.createElement("input");
    this.slider.type = "range";
    this.slider.min = "0";
    this.slider.value = "0";
    this.slider.title = "Frame";
    this.slider.addEventListener("input", () => { this.frame = Number(this.slider.value); this.draw(); });
    this.label = document.createElement("span");
    Object.assign(this.label.style, { fontSize: "11px", opacity: "0.8" });
    const row = document.createElement("div");
    Object.assign(row.style, { display: "flex", alignItems: "center", gap: "6px" });
    row.append(this.slider, this.label);
    this.slider.style.flex = "1";
    this.canvas = document.createElement("canvas");
    Object.assign(this.canvas.style, { width: "100%", flex: "1", minHeight: "0", objectFit: "contain",
                                       imageRendering: "pixelated", cursor: "crosshair" });
    this.canvas.addEventListener("mousemove", (event) => {
      const box = this.canvas.getBoundingClientRect();
      this.hoverX = (event.clientX - box.left) / box.width;
      if (this.mode === "compare") this.draw();
    });
    this.canvas.addEventListener("mouseleave", () => { this.hoverX = null; if (this.mode === "compare") this.draw(); });
    this.element.append(this.bar, row, this.canvas);
    this.message("Run the workflow to see the layers.");
  }

  message(text) {
    this.label.textContent = text;
  }

  show(entry) {
    this.entry = entry;
    this.cache.clear();
    this.frame = Math.min(this.frame, entry.frames.length - 1);
    this.slider.max = String(Math.max(0, entry.frames.length - 1));
    this.slider.value = String(this.frame);
    const has = (kind) => entry.frames.length > 0 && kind in entry.frames[0];
    const available = { edit: has("edit"), alpha: has("alpha"), composite: has("composite"),
                        compare: has("source") && has("composite"), difference: has("source") && has("composite") };
    for (const [mode, button] of this.buttons) button.disabled = !available[mode];
    if (!available[this.mode]) this.mode = MODES.map((m) => m[0]).find((m) => available[m]) || "edit";
    this.setMode(this.mode);
  }

  setMode(mode) {
    this.mode = mode;
    for (const [name, button] of this.buttons) button.style.fontWeight = name === mode ? "bold" : "normal";
    this.draw();
  }

  async images(kinds) {
    const files = this.entry.frames[this.frame];
    return Promise.all(kinds.map((kind) => {
      const key = `${this.frame}:${kind}`;
      if (!this.cache.has(key)) this.cache.set(key, loadImage(files[kind]));
      return this.cache.get(key);
    }));
  }

  async draw() {
    if (!this.entry || this.entry.frames.length === 0) return;
    const index = this.entry.frame_indices ? this.entry.frame_indices[this.frame] : this.frame;
    this.message(`frame ${index + 1} of ${this.entry.total_frames ?? this.entry.frames.length}` +
                 (this.entry.folder ? ` \u00b7 saved to output/${this.entry.folder}` : ""));
    const mode = this.mode;
    const kinds = { edit: ["edit"], alpha: ["alpha"], composite: ["composite"], compare: ["source", "composite"],
                    difference: ["source", "composite"] }[mode];
    let images;
    try {
      images = await this.images(kinds);
    } catch (error) {
      this.message(String(error.message || error));
      return;
    }
    if (mode !== this.mode) return;
    const [first] = images;
    const { width, height } = first;
    this.canvas.width = width;
    this.canvas.height = height;
    const ctx = this.canvas.getContext("2d", { willReadFrequently: mode === "difference" });
    ctx.clearRect(0, 0, width, height);
    if (mode === "edit") {
      checkerboard(ctx, width, height);
      ctx.drawImage(first, 0, 0);
    } else if (mode === "compare") {
      const [source, composite] = images;
      ctx.drawImage(composite, 0, 0);
      const split = Math.round((this.hoverX ?? 0.5) * width);
      ctx.drawImage(source, 0, 0, split, height, 0, 0, split, height);
      ctx.fillStyle = "#ffffff";
      ctx.fillRect(split - 1, 0, 2, height);
    } else if (mode === "difference") {
      const [source, composite] = images;
      ctx.drawImage(source, 0, 0);
      const a = ctx.getImageData(0, 0, width, height);
      ctx.drawImage(composite, 0, 0);
      const b = ctx.getImageData(0, 0, width, height);
      for (let i = 0; i < a.data.length; i += 4) {
        const diff = Math.max(Math.abs(a.data[i] - b.data[i]), Math.abs(a.data[i + 1] - b.data[i + 1]),
                              Math.abs(a.data[i + 2] - b.data[i + 2])) / 255;
        const [r, g, bl] = heat(diff * 4);
        b.data[i] = r; b.data[i + 1] = g; b.data[i + 2] = bl; b.data[i + 3] = 255;
      }
      ctx.putImageData(b, 0, 0);
    } else {
      ctx.drawImage(first, 0, 0);
    }
  }
}

app.registerExtension({
  name: "vera.LayerViewer",
  async beforeRegisterNodeDef(nodeType, nodeData) {
    if (!VIEWER_NODES.has(nodeData.name)) return;
    const onNodeCreated = nodeType.prototype.onNodeCreated;
    nodeType.prototype.onNodeCreated = function () {
      const result = onNodeCreated?.apply(this, arguments);
      this.veraViewer = new LayerViewer();
      this.addDOMWidget("vera_layer_viewer", "vera_layer_viewer", this.veraViewer.element,
                        { serialize: false, hideOnZoom: false, getMinHeight: () => 240 });
      this.setSize([Math.max(this.size[0], 340), Math.max(this.size[1], 420)]);
      return result;
    };
    const onExecuted = nodeType.prototype.onExecuted;
    nodeType.prototype.onExecuted = function (message) {
      const result = onExecuted?.apply(this, arguments);
      const entry = message?.vera_layers?.[0];
      if (entry && this.veraViewer) this.veraViewer.show(entry);
      return result;
    };
  },
});

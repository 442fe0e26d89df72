// A small slippy map on a canvas: Web Mercator, optional XYZ raster tiles, a lat/lon grid underneath
// (so the map is usable when no tile server is configured or reachable), drag to pan, wheel or
// buttons to zoom, click to pick a point. No library: the portal loads nothing from elsewhere.
"use strict";

const TILE = 256;
const MAX_LAT = 85.05112878;
const MIN_ZOOM = 2;
const MAX_ZOOM = 19;
const GRID_STEPS = [10, 5, 2, 1, 0.5, 0.2, 0.1, 0.05, 0.02, 0.01, 0.005, 0.002, 0.001, 0.0005, 0.0002, 0.0001];

// World pixel coordinates of (lat, lon) at zoom z (the tile grid is 2^z tiles of 256 px per side).
function project(lat, lon, z) {
  const size = TILE * 2 ** z;
  const clamped = Math.max(-MAX_LAT, Math.min(MAX_LAT, lat));
  const s = Math.sin((clamped * Math.PI) / 180);
  return {
    x: ((lon + 180) / 360) * size,
    y: (0.5 - Math.log((1 + s) / (1 - s)) / (4 * Math.PI)) * size,
  };
}

function unproject(x, y, z) {
  const size = TILE * 2 ** z;
  const n = Math.PI - (2 * Math.PI * y) / size;
  let lon = (x / size) * 360 - 180;
  lon = ((((lon + 180) % 360) + 360) % 360) - 180; // wrap after panning across the antimeridian
  return { lat: (180 / Math.PI) * Math.atan(Math.sinh(n)), lon };
}

function metresPerPixel(lat, z) {
  return (156543.03392 * Math.cos((lat * Math.PI) / 180)) / 2 ** z;
}

class TileMap {
  constructor(canvas, { tileUrl = "", attribution = "", center, zoom = 15, onPick = null }) {
    this.canvas = canvas;
    this.tileUrl = tileUrl;
    this.attribution = attribution;
    this.center = { lat: center.lat, lon: center.lon };
    this.zoom = zoom;
    this.onPick = onPick;
    this.marker = null; // {lat, lon, radius_m}
    this.tiles = new Map(); // "z/x/y" -> {img, state: "loading" | "ok" | "failed"}
    this.drag = null;
    this.pending = false;
    this._bind();
    this.resize();
  }

  _bind() {
    const c = this.canvas;
    c.addEventListener("pointerdown", (e) => {
      c.setPointerCapture(e.pointerId);
      this.drag = { x: e.clientX, y: e.clientY, moved: 0, center: project(this.center.lat, this.center.lon, this.zoom) };
    });
    c.addEventListener("pointermove", (e) => {
      if (!this.drag) return;
      const dx = e.clientX - this.drag.x;
      const dy = e.clientY - this.drag.y;
      this.drag.moved = Math.max(this.drag.moved, Math.abs(dx) + Math.abs(dy));
      if (this.drag.moved > 4) {
        this.center = unproject(this.drag.center.x - dx, this.drag.center.y - dy, this.zoom);
        this.draw();
      }
    });
    c.addEventListener("pointerup", (e) => {
      const wasClick = this.drag && this.drag.moved <= 4;
      this.drag = null;
      if (wasClick && this.onPick) {
        const p = this.pointAt(e.clientX, e.clientY);
        this.onPick(p.lat, p.lon);
      }
    });
    c.addEventListener("pointercancel", () => {
      this.drag = null;
    });
    c.addEventListener(
      "wheel",
      (e) => {
        e.preventDefault();
        this.zoomBy(e.deltaY < 0 ? 1 : -1, e.clientX, e.clientY);
      },
      { passive: false },
    );
    window.addEventListener("resize", () => this.resize());
  }

  resize() {
    const dpr = window.devicePixelRatio || 1;
    const rect = this.canvas.getBoundingClientRect();
    this.width = Math.max(1, Math.round(rect.width || this.canvas.width));
    this.height = Math.max(1, Math.round(rect.height || this.canvas.height));
    this.canvas.width = this.width * dpr;
    this.canvas.height = this.height * dpr;
    this.ctx = this.canvas.getContext("2d");
    this.ctx.setTransform(dpr, 0, 0, dpr, 0, 0);
    this.draw();
  }

  // The (lat, lon) under a viewport position (clientX/clientY).
  pointAt(clientX, clientY) {
    const rect = this.canvas.getBoundingClientRect();
    const c = project(this.center.lat, this.center.lon, this.zoom);
    return unproject(c.x + (clientX - rect.left) - this.width / 2, c.y + (clientY - rect.top) - this.height / 2, this.zoom);
  }

  // The canvas position (CSS pixels) of (lat, lon) in the current view.
  pixelOf(lat, lon) {
    const c = project(this.center.lat, this.center.lon, this.zoom);
    const p = project(lat, lon, this.zoom);
    return { x: p.x - c.x + this.width / 2, y: p.y - c.y + this.height / 2 };
  }

  zoomBy(delta, clientX, clientY) {
    const z = Math.max(MIN_ZOOM, Math.min(MAX_ZOOM, this.zoom + delta));
    if (z === this.zoom) return;
    // Keep the point under the cursor where it is.
    const anchor = clientX === undefined ? this.center : this.pointAt(clientX, clientY);
    const before = this.pixelOf(anchor.lat, anchor.lon);
    this.zoom = z;
    const a = project(anchor.lat, anchor.lon, z);
    this.center = unproject(a.x - (before.x - this.width / 2), a.y - (before.y - this.height / 2), z);
    this.draw();
  }

  setCenter(lat, lon) {
    this.center = { lat, lon };
    this.draw();
  }

  setMarker(lat, lon, radiusM) {
    this.marker = lat === null ? null : { lat, lon, radius_m: radiusM || 0 };
    this.draw();
  }

  _tileSrc(z, x, y) {
    const sub = "abc"[Math.abs(x + y) % 3];
    return this.tileUrl.replace("{z}", z).replace("{x}", x).replace("{y}", y).replace("{s}", sub);
  }

  _tile(z, x, y) {
    const key = `${z}/${x}/${y}`;
    let t = this.tiles.get(key);
    if (!t) {
      const img = new Image();
      t = { img, state: "loading" };
      img.onload = () => {
        t.state = "ok";
        this._redrawSoon();
      };
      img.onerror = () => {
        t.state = "failed"; // the grid underneath stays visible
      };
      img.src = this._tileSrc(z, x, y);
      if (this.tiles.size > 500) this.tiles.clear(); // a bounded cache is plenty for one page
      this.tiles.set(key, t);
    }
    return t;
  }

  _redrawSoon() {
    if (this.pending) return;
    this.pending = true;
    requestAnimationFrame(() => {
      this.pending = false;
      this.draw();
    });
  }

  draw() {
    const ctx = this.ctx;
    if (!ctx) return;
    const w = this.width;
    const h = this.height;
    const z = this.zoom;
    const c = project(this.center.lat, this.center.lon, z);
    const left = c.x - w / 2;
    const top = c.y - h / 2;
    ctx.fillStyle = "#eef2ee";
    ctx.fillRect(0, 0, w, h);
    this._drawGrid(left, top);
    if (this.tileUrl) {
      const n = 2 ** z;
      for (let ty = Math.floor(top / TILE); ty <= Math.floor((top + h) / TILE); ty++) {
        if (ty < 0 || ty >= n) continue;
        for (let tx = Math.floor(left / TILE); tx <= Math.floor((left + w) / TILE); tx++) {
          const t = this._tile(z, ((tx % n) + n) % n, ty);
          if (t.state === "ok") ctx.drawImage(t.img, tx * TILE - left, ty * TILE - top, TILE, TILE);
        }
      }
    }
    this._drawMarker();
    this._drawScale();
    ctx.font = "11px sans-serif";
    ctx.fillStyle = "rgba(0,0,0,0.7)";
    ctx.textAlign = "right";
    const centre = `${this.center.lat.toFixed(5)}, ${this.center.lon.toFixed(5)}  z${z}`;
    ctx.fillText(this.attribution ? `${this.attribution} | ${centre}` : centre, w - 6, h - 6);
    ctx.textAlign = "left";
  }

  _drawGrid(left, top) {
    const ctx = this.ctx;
    const w = this.width;
    const h = this.height;
    const nw = unproject(left, top, this.zoom);
    const se = unproject(left + w, top + h, this.zoom);
    const span = Math.max(Math.abs(se.lon - nw.lon), 1e-9);
    const step = GRID_STEPS.find((s) => (s / span) * w < 140) || GRID_STEPS[GRID_STEPS.length - 1];
    const decimals = Math.max(0, -Math.floor(Math.log10(step)));
    ctx.strokeStyle = "#c9d3c9";
    ctx.fillStyle = "#6b7a6b";
    ctx.lineWidth = 1;
    ctx.font = "11px sans-serif";
    for (let lon = Math.ceil(nw.lon / step) * step; lon <= se.lon; lon += step) {
      const x = this.pixelOf(this.center.lat, lon).x;
      ctx.beginPath();
      ctx.moveTo(x, 0);
      ctx.lineTo(x, h);
      ctx.stroke();
      ctx.fillText(lon.toFixed(decimals), x + 3, 12);
    }
    for (let lat = Math.ceil(se.lat / step) * step; lat <= nw.lat; lat += step) {
      const y = this.pixelOf(lat, this.center.lon).y;
      ctx.beginPath();
      ctx.moveTo(0, y);
      ctx.lineTo(w, y);
      ctx.stroke();
      ctx.fillText(lat.toFixed(decimals), 3, y - 3);
    }
  }

  _drawMarker() {
    if (!this.marker) return;
    const ctx = this.ctx;
    const p = this.pixelOf(this.marker.lat, this.marker.lon);
    const r = this.marker.radius_m / metresPerPixel(this.marker.lat, this.zoom);
    if (r > 2) {
      ctx.beginPath();
      ctx.arc(p.x, p.y, r, 0, 2 * Math.PI);
      ctx.fillStyle = "rgba(226, 87, 30, 0.15)";
      ctx.fill();
      ctx.strokeStyle = "rgba(226, 87, 30, 0.8)";
      ctx.stroke();
    }
    ctx.beginPath();
    ctx.arc(p.x, p.y, 6, 0, 2 * Math.PI);
    ctx.fillStyle = "#e2571e";
    ctx.fill();
    ctx.lineWidth = 2;
    ctx.strokeStyle = "#fff";
    ctx.stroke();
    ctx.lineWidth = 1;
  }

  _drawScale() {
    const ctx = this.ctx;
    const mpp = metresPerPixel(this.center.lat, this.zoom);
    const nice = [10, 20, 50, 100, 200, 500, 1000, 2000, 5000, 10000, 20000, 50000, 100000, 200000, 500000];
    const metres = nice.find((m) => m / mpp >= 60) || nice[nice.length - 1];
    const px = metres / mpp;
    const y = this.height - 20;
    ctx.strokeStyle = "#333";
    ctx.lineWidth = 2;
    ctx.beginPath();
    ctx.moveTo(8, y);
    ctx.lineTo(8 + px, y);
    ctx.stroke();
    ctx.lineWidth = 1;
    ctx.fillStyle = "#333";
    ctx.font = "11px sans-serif";
    ctx.fillText(metres >= 1000 ? `${metres / 1000} km` : `${metres} m`, 8, y - 4);
  }
}

window.PortalMap = { TileMap, project, unproject, metresPerPixel };

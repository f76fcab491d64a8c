import "./style.css";
import { setupCounter } from "./counter.ts";

const app = document.querySelector<HTMLDivElement>("#app")!;

app.innerHTML = `
  <main>
    <h1>Vite + TypeScript</h1>
    <p class="route">You are at <code id="route"></code></p>
    <div class="card">
      <button id="counter" type="button"></button>
    </div>
    <p class="hint">Rendered by the client bundle (${app.dataset.marker ?? ""}).</p>
  </main>
`;

const route = document.querySelector<HTMLElement>("#route")!;
route.textContent = window.location.pathname;

setupCounter(document.querySelector<HTMLButtonElement>("#counter")!);

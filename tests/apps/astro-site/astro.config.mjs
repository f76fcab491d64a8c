// @ts-check
import { defineConfig } from 'astro/config';

// https://astro.build/config
// No adapter: `astro build` writes a static site into dist/ (about.astro -> dist/about/index.html).
export default defineConfig({});

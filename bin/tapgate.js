#!/usr/bin/env node
// First the SIGUSR1 listener (src/cli/signals.ts), then the rest: loading it takes a moment.
import '../dist/cli/signals.js';
await import('../dist/cli/main.js');

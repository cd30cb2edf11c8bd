/**
 * The README's first command: `npm run demo` (scripts/demo.js on the built dist/) must run on
 * this machine as it is — a lab, python's http.server with keep-alive, curl through the gateway,
 * both files rewritten exactly over one connection, framed right, the lab removed after.
 */
import { spawnSync } from 'node:child_process';
import { join } from 'node:path';
import { expect, it } from 'vitest';
import { describeE2E, e2eProblems, REPO } from '../lab/e2e-env.js';

describeE2E('npm run demo', e2eProblems(['ip', 'python3', 'curl']), () => {
  it('runs to the end: both files rewritten over one connection, the small one with its length fixed, the large one re-chunked; no lab left', () => {
    const r = spawnSync(process.execPath, [join(REPO, 'scripts/demo.js')], { cwd: REPO, encoding: 'utf8', timeout: 120_000 });
    expect(r.status, `${r.stdout}\n${r.stderr}`).toBe(0);
    expect(r.stdout).toContain('both files == original with both replacements applied: yes; one connection: yes');
    expect(r.stdout).toMatch(/fruit\.html\s+200\s+new connection\s+re-chunked/);
    expect(r.stdout).toMatch(/notes\.html\s+200\s+same connection\s+Content-Length: \d+ \(the server sent 2720\)/);
    expect(r.stdout).toMatch(/RSTs seen\s+0/);
    const ns = spawnSync('ip', ['netns', 'list'], { encoding: 'utf8' }).stdout;
    expect(ns).not.toMatch(/tgdemo-/);
  });
});

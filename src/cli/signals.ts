/**
 * Imported first by the command line (./main.ts): without a listener, SIGUSR1 makes Node start
 * its inspector, a debugger on 127.0.0.1:9229 that lets any local user run code in this process,
 * which runs as root. The gateway prints its statistics on SIGUSR1 once it runs (./run.ts,
 * ./run-queues.ts); one that arrives before (a monitoring script polling a gateway that is still
 * opening its TAPs or warming up) finds this listener and does nothing. It stays for the
 * process's lifetime. bin/tapgate.js imports this before loading the rest; an entry that loads
 * the whole command line first (`node --import tsx src/cli/main.ts`, development) is covered
 * only once that is loaded, and a signal in Node's own first milliseconds never is (its default
 * then ends the process).
 */
process.on('SIGUSR1', () => {});

// SIGHUP asks `run` to reload its config (./run.ts); by default it ends the process. One that
// comes while `run` is still loading (a config, its TAPs, the warm-up) must not end the gateway:
// run.ts logs it as nothing reloaded. Other commands keep the default (a hangup ends them).
if (process.argv.includes('run')) process.on('SIGHUP', () => {});

/**
 * The `tapgate` command line: one yargs command module per command, thin handlers.
 */
import { clusterCommand } from './cluster.js';
import yargs from 'yargs';
import { hideBin } from 'yargs/helpers';
import { labCommand } from './lab.js';
import { replayCommand } from './replay.js';
import { runCommand } from './run.js';

await yargs(hideBin(process.argv))
  .scriptName('tapgate')
  .command(replayCommand)
  .command(runCommand)
  .command(labCommand)
  .command(clusterCommand)
  .demandCommand(1, 'name a command')
  .strict()
  .fail((msg, err, y) => {
    if (err) throw err;
    process.stderr.write(`${y.help()}\n\n${msg}\n`);
    process.exit(1);
  })
  .help()
  .parseAsync();

/** NAT on the bridge (docs/ARCHITECTURE.md §6): pure translation state and the ftp agent's NAT-backed hooks. */
export * from './nat.js';
export { natFtpHooks, type NatFtpOptions } from './ftp-hooks.js';

/** NAT on the bridge (DESIGN.md §4): pure translation state and the ftp agent's NAT-backed hooks. */
export * from './nat.js';
export { natFtpHooks, type NatFtpOptions } from './ftp-hooks.js';

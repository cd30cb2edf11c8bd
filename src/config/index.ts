/** Config: YAML loading, validation with precise errors, rule selection. */
export { ConfigError, formatIssue, formatPath, type ConfigIssue } from './errors.js';
export { cidrContains, formatCidr, formatIpBlock, parseCidr, type Cidr } from '../wire/cidr.js';
export {
  configDigest,
  DEFAULT_POLICY,
  loadConfig,
  parseConfig,
  type Config,
  type ConnKey,
  type NatSettings,
  type PolicyAction,
  type PolicySettings,
  type Matcher,
  type PortRange,
  type Rule,
  type RuleDirection,
} from './load.js';
export { ruleIndex, ruleMatches, rulePortsMatch, selectRule } from './select.js';

/**
 * The CDK app (`cdk.json` runs it with tsx): one regvault stack, configured by
 * context, checked by cdk-nag's AwsSolutions rules at every synth.
 */
import { App, Validations } from 'aws-cdk-lib';
import { AwsSolutionsChecks } from 'cdk-nag';
import { RegvaultStack } from './regvault-stack.ts';
import { parseSettings, type RegvaultSettings, SettingsError } from './settings.ts';

const app = new App();

let settings: RegvaultSettings;
try {
  settings = parseSettings(app.node.getAllContext());
} catch (err) {
  if (!(err instanceof SettingsError)) throw err;
  // The list of problems is the whole story; a stack trace would only bury it.
  console.error(err.message);
  process.exit(1);
}

new RegvaultStack(app, settings.stackName, {
  description: 'regvault: backup and recovery of a container registry bucket',
  settings,
  // Environment-agnostic: nothing is looked up, so synth needs no credentials.
});
Validations.of(app).addPlugins(new AwsSolutionsChecks(app, { verbose: true }));

app.synth();

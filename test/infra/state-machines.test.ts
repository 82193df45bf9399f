import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from '@jest/globals';
import aslValidator from 'asl-validator';
import { Match } from 'aws-cdk-lib/assertions';
import { WORKFLOWS } from '../../functions/commons/workflows/steps.ts';
import { substitutionsFor } from '../../infra/asl.ts';
import { PROJECT_ROOT } from '../../infra/house-function.ts';
import { buildStack, resourcesOf } from './support.ts';

const built = buildStack();
const fileOf = (workflow: string) => join(PROJECT_ROOT, 'state-machines', `${workflow}.asl.json`);
const textOf = (workflow: string) => readFileSync(fileOf(workflow), 'utf8');

/** Read independently of infra/asl.ts, so a wrong scanner there cannot hide here. */
function placeholders(text: string): string[] {
  return [...new Set(Array.from(text.matchAll(/\$\{(\w+)\}/g), (match) => match[1] ?? ''))].sort();
}

describe('the state machine definitions', () => {
  it.each(WORKFLOWS)(
    '%s: the deployed substitutions are exactly the placeholders of its file',
    (workflow) => {
      // Prepare
      const logicalId = built.stack.getLogicalId(
        built.stack.stateMachines[workflow].node.defaultChild as Parameters<
          typeof built.stack.getLogicalId
        >[0],
      );

      // Act
      const props = resourcesOf(built.template, 'AWS::StepFunctions::StateMachine')[logicalId]
        ?.Properties;
      const keys = Object.keys(
        (props?.['DefinitionSubstitutions'] ?? {}) as Record<string, unknown>,
      ).sort();

      // Assess
      expect(placeholders(textOf(workflow)).length).toBeGreaterThan(4);
      expect(keys).toEqual(placeholders(textOf(workflow)));
    },
  );

  // asl-validator 4 accepts a whole-value `${...}` Resource as a substitution only
  // with the ARN check on: with it off, the value matches two schemas of a oneOf.
  it.each(WORKFLOWS)(
    '%s: asl-validator accepts the file as written, placeholders and all',
    (workflow) => {
      // Prepare
      const definition: unknown = JSON.parse(textOf(workflow));

      // Act
      const result = aslValidator(definition, { checkPaths: true, checkArn: true });

      // Assess
      expect(result.errorsText()).toBe('');
      expect(result.isValid).toBe(true);
    },
  );

  it.each(WORKFLOWS)(
    '%s: asl-validator accepts it with ARNs filled in and the ARN check on',
    (workflow) => {
      // Prepare
      const filled = textOf(workflow).replace(/\$\{(\w+)\}/g, (_match, name: string) => {
        if (name === 'CopyPollSeconds') return '10';
        if (name === 'CopyTimeoutSeconds') return '86400';
        return `arn:aws:lambda:eu-west-1:123456789012:function:regvault-${name.replace(/FunctionArn$/, '')}`;
      });

      // Act
      const result = aslValidator(JSON.parse(filled), { checkPaths: true, checkArn: true });

      // Assess
      expect(result.errorsText()).toBe('');
      expect(result.isValid).toBe(true);
    },
  );

  it.each(WORKFLOWS)(
    '%s: fans out with no Map and no concurrency in the definition, waiting and counting with the stack settings',
    (workflow) => {
      // Prepare
      const custom = buildStack({ copyPollSeconds: '15', copyTimeoutHours: '6' });
      const logicalId = custom.stack.getLogicalId(
        custom.stack.stateMachines[workflow].node.defaultChild as Parameters<
          typeof custom.stack.getLogicalId
        >[0],
      );
      const states = Object.values(
        (JSON.parse(textOf(workflow)) as { States: Record<string, Record<string, unknown>> })
          .States,
      );

      // Act
      const substitutions = resourcesOf(custom.template, 'AWS::StepFunctions::StateMachine')[
        logicalId
      ]?.Properties['DefinitionSubstitutions'] as Record<string, unknown>;
      const waits = states.filter((state) => state['SecondsPath'] === '$.settings.copyPollSeconds');

      // Assess
      expect(states.filter((state) => state['Type'] === 'Map')).toEqual([]);
      expect(textOf(workflow)).not.toMatch(/MaxConcurrency|waitForTaskToken|\bItemsPath\b/);
      expect(waits.length).toBeGreaterThan(0);
      expect(substitutions['CopyPollSeconds']).toBe('15');
      expect(substitutions['CopyTimeoutSeconds']).toBe(String(6 * 3_600));
    },
  );

  it('synthesises with copyWorkers=1000 to a template where 1,000 copies run at once', () => {
    // Prepare / Act
    const { template, stack } = buildStack({ copyWorkers: '1000' });
    // CDK deploys each file as an asset (DefinitionS3Location) with these substitutions.
    const machines = Object.values(resourcesOf(template, 'AWS::StepFunctions::StateMachine'));
    const substituted = machines.flatMap((machine) =>
      Object.values(machine.Properties['DefinitionSubstitutions'] as Record<string, unknown>),
    );
    const states = WORKFLOWS.flatMap((workflow) =>
      Object.entries(
        (JSON.parse(textOf(workflow)) as { States: Record<string, Record<string, unknown>> })
          .States,
      ),
    );

    // Assess: the copy queue's event source allows 1,000 concurrent workers ...
    template.hasResourceProperties('AWS::Lambda::EventSourceMapping', {
      EventSourceArn: {
        'Fn::GetAtt': [
          stack.getLogicalId(
            stack.copyQueue.node.defaultChild as Parameters<typeof stack.getLogicalId>[0],
          ),
          'Arn',
        ],
      },
      ScalingConfig: { MaximumConcurrency: 1000 },
    });
    // ... nothing reserves or caps the worker's concurrency below that ...
    template.hasResourceProperties('AWS::Lambda::Function', {
      Description: Match.stringLikeRegexp('^Copy worker'),
      ReservedConcurrentExecutions: Match.absent(),
    });
    // ... and neither workflow has a Map or any MaxConcurrency (inline Map stops at 40).
    expect(machines.map((machine) => machine.Properties['DefinitionS3Location'])).toHaveLength(2);
    expect(states.map(([name]) => name)).toContain('EnqueueShards');
    expect(states.filter(([, state]) => state['Type'] === 'Map')).toEqual([]);
    expect(WORKFLOWS.map(textOf).join('')).not.toContain('MaxConcurrency');
    expect(substituted).not.toContain('40');
  });

  it('refuses to synthesise a definition with a placeholder the stack does not fill, or a value nothing uses', () => {
    // Prepare
    const file = fileOf('backup');
    const values = Object.fromEntries(
      placeholders(textOf('backup')).map((name) => [name, `value-of-${name}`]),
    );
    const { CopyPollSeconds: _dropped, ...missingOne } = values;

    // Act
    const complete = () => substitutionsFor(file, values);
    const missing = () => substitutionsFor(file, missingOne);
    const extra = () => substitutionsFor(file, { ...values, StaleFunctionArn: 'arn' });

    // Assess
    expect(complete()).toEqual(values);
    expect(missing).toThrow(/missing \["CopyPollSeconds"\]/);
    expect(extra).toThrow(/unused \["StaleFunctionArn"\]/);
  });
});

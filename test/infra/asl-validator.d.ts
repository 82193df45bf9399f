// asl-validator 4 ships no types; this declares the part the tests call.
declare module 'asl-validator' {
  interface ValidationResult {
    readonly isValid: boolean;
    readonly errors: ReadonlyArray<{ readonly message?: string }>;
    errorsText(separator?: string): string;
  }
  function validator(
    definition: unknown,
    options?: { checkPaths: boolean; checkArn: boolean },
  ): ValidationResult;
  export = validator;
}

// A bound on how much one GraphQL document may ask for. The depth limit alone
// lets a flat query alias one field thousands of times (`a1: product(...)
// a2: product(...) ...`), each alias a request to a service; this rule counts
// the fields an operation selects, fragments expanded, and refuses the
// document before anything runs.
import { GraphQLError, Kind, type ASTVisitor, type SelectionSetNode, type ValidationContext } from 'graphql';

export function maxFieldsRule(limit: number) {
  return (context: ValidationContext): ASTVisitor => {
    const fragmentSizes = new Map<string, number>();

    const count = (set: SelectionSetNode, visiting: Set<string>): number => {
      let fields = 0;
      for (const selection of set.selections) {
        if (selection.kind === Kind.FIELD) {
          fields += 1 + (selection.selectionSet ? count(selection.selectionSet, visiting) : 0);
        } else if (selection.kind === Kind.INLINE_FRAGMENT) {
          fields += count(selection.selectionSet, visiting);
        } else {
          const name = selection.name.value;
          const fragment = context.getFragment(name);
          // Unknown or cyclic fragments are reported by graphql-js's own rules.
          if (!fragment || visiting.has(name)) continue;
          let size = fragmentSizes.get(name);
          if (size === undefined) {
            size = count(fragment.selectionSet, new Set([...visiting, name]));
            fragmentSizes.set(name, size);
          }
          fields += size;
        }
        if (fields > limit) return fields; // enough to refuse; stop counting
      }
      return fields;
    };

    return {
      OperationDefinition(node) {
        const fields = count(node.selectionSet, new Set());
        if (fields > limit) {
          context.reportError(
            new GraphQLError(`the query selects more than ${limit} fields`, {
              nodes: [node],
              extensions: { code: 'QUERY_TOO_COMPLEX' },
            }),
          );
        }
      },
    };
  };
}

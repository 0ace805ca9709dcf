-- The example application's database: `database hydrate` (and the pytest plugin's template
-- build) runs this after the hectic bundle.
CREATE SCHEMA todo;

CREATE TABLE todo.task (
    id      bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    title   text NOT NULL CHECK (title <> ''),
    done    boolean NOT NULL DEFAULT false
) INHERITS (hectic.created_at);

CREATE FUNCTION todo.finish(task_id bigint) RETURNS boolean
LANGUAGE sql AS $$
    UPDATE todo.task SET done = true WHERE id = task_id AND NOT done RETURNING true
$$;
